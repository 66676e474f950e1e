// Command gojson_oracle writes gojson_golden.json: inputs and what Go's encoding/json makes of
// them, so the Python tests can compare resources/soci/gojson.py with real Go byte for byte.
//
// Regenerate (Go 1.22 or newer, standard library only):
//
//	go run tests/resources/soci/golden/gojson_oracle.go > tests/resources/soci/golden/gojson_golden.json
//
// The OCI structs below are copied field for field (names, order, tags) from
// github.com/opencontainers/image-spec/specs-go v1.1.0, which soci-snapshotter uses.
package main

import (
	"encoding/json"
	"os"
	"runtime"
)

type Versioned struct {
	SchemaVersion int `json:"schemaVersion"`
}

type Platform struct {
	Architecture string   `json:"architecture"`
	OS           string   `json:"os"`
	OSVersion    string   `json:"os.version,omitempty"`
	OSFeatures   []string `json:"os.features,omitempty"`
	Variant      string   `json:"variant,omitempty"`
}

type Descriptor struct {
	MediaType    string            `json:"mediaType"`
	Digest       string            `json:"digest"`
	Size         int64             `json:"size"`
	URLs         []string          `json:"urls,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	Data         []byte            `json:"data,omitempty"`
	Platform     *Platform         `json:"platform,omitempty"`
	ArtifactType string            `json:"artifactType,omitempty"`
}

type Manifest struct {
	Versioned
	MediaType    string            `json:"mediaType,omitempty"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Config       Descriptor        `json:"config"`
	Layers       []Descriptor      `json:"layers"`
	Subject      *Descriptor       `json:"subject,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
}

type Index struct {
	Versioned
	MediaType    string            `json:"mediaType,omitempty"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Manifests    []Descriptor      `json:"manifests"`
	Subject      *Descriptor       `json:"subject,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
}

type Case struct {
	Kind   string `json:"kind"`
	Input  []byte `json:"input"`
	Output []byte `json:"output,omitempty"`
	Error  string `json:"error,omitempty"`
}

func roundTrip(kind string, in []byte, v any) Case {
	c := Case{Kind: kind, Input: in}
	if err := json.Unmarshal(in, v); err != nil {
		c.Error = err.Error()
		return c
	}
	out, err := json.Marshal(v)
	if err != nil {
		c.Error = err.Error()
		return c
	}
	c.Output = out
	return c
}

func main() {
	var cases []Case

	strs := []string{
		"", "plain", "quote\" backslash\\ slash/",
		"<script>&amp;</script>", "tab\tnl\ncr\rbs\bff\f", "\x00\x01\x1f\x7f",
		"caf\u00e9 \u4e2d\u6587 \U0001F600", "\u2028line\u2029para", "\u2027\u202a",
		"bad \xff byte", "trunc \xe2\x82", "surrogate \xed\xa0\x80", "overlong \xc0\xaf", "max \xf4\x8f\xbf\xbf over \xf4\x90\x80\x80",
		"\xe2\x82A", "\xf0\x9f\x98",
	}
	for b := 0; b < 128; b++ {
		strs = append(strs, string([]byte{'a', byte(b), 'z'}))
	}
	for _, s := range strs {
		out, _ := json.Marshal(s)
		cases = append(cases, Case{Kind: "string", Input: []byte(s), Output: out})
	}

	maps := []map[string]string{
		{"b": "1", "a": "2", "B": "3", "_": "4", "\u00e9": "5", "e": "6", "<": "7", "a<b": "8", "": "9"},
		{"com.amazon.soci.image-layer-mediaType": "x", "com.amazon.soci.image-layer-digest": "y", "com.amazon.soci.span-size": "4194304"},
	}
	for _, m := range maps {
		in, _ := json.Marshal(m) // any key order works as input; the output is what matters
		out, _ := json.Marshal(m)
		cases = append(cases, Case{Kind: "map", Input: in, Output: out})
	}

	floats := []string{"0", "1", "-1", "0.5", "1e21", "1e20", "123456789", "1e-7", "0.000001", "1.5e300", "-2.5e-10", "3.141592653589793", "5e-324", "1.7976931348623157e308", "100", "0.1", "-0"}
	for _, f := range floats {
		var v float64
		_ = json.Unmarshal([]byte(f), &v)
		if f == "-0" {
			v = negZero()
		}
		out, _ := json.Marshal(v)
		cases = append(cases, Case{Kind: "float", Input: []byte(f), Output: out})
	}

	manifests := []string{
		// Docker schema2 manifest as dockerd pushes it (pretty-printed, extra whitespace).
		"{\n   \"schemaVersion\": 2,\n   \"mediaType\": \"application/vnd.docker.distribution.manifest.v2+json\",\n   \"config\": {\n      \"mediaType\": \"application/vnd.docker.container.image.v1+json\",\n      \"size\": 1469,\n      \"digest\": \"sha256:aaaa\"\n   },\n   \"layers\": [\n      {\n         \"mediaType\": \"application/vnd.docker.image.rootfs.diff.tar.gzip\",\n         \"size\": 2811478,\n         \"digest\": \"sha256:bbbb\"\n      }\n   ]\n}",
		// Unknown fields at every level drop out.
		`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","extra":{"x":[1,2]},"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:c","size":2,"weird":true},"layers":[{"mediaType":"m","digest":"d","size":1,"annotations":{"z":"1","a":"<&>"},"foo":null}],"annotations":{"org.opencontainers.image.created":"2024-01-01T00:00:00Z"}}`,
		// Empty annotations and urls are omitted; empty layers array stays [].
		`{"schemaVersion":2,"config":{"mediaType":"x","digest":"y","size":0,"annotations":{},"urls":[]},"layers":[],"annotations":{}}`,
		// Missing layers encodes as null; missing config as the zero descriptor.
		`{"schemaVersion":2}`,
		// Case-insensitive keys, exact match preferred, last duplicate wins, objects merge.
		`{"SCHEMAVERSION":2,"MediaType":"a","mediaType":"b","config":{"mediaType":"c","digest":"d"},"config":{"size":5},"annotations":{"k1":"v1"},"annotations":{"k2":"v2"},"layers":[{"size":1}],"layers":[{"size":2}]}`,
		// Fold-equivalent Unicode: U+017F (long s) and U+212A (Kelvin) match s and k.
		"{\"\u017fchemaVersion\":2,\"config\":{\"mediaType\":\"x\",\"digest\":\"y\",\"\u017fize\":3},\"layers\":null}",
		// null leaves strings/ints alone, nils slices/maps/pointers.
		`{"schemaVersion":2,"mediaType":null,"config":null,"layers":null,"subject":null,"annotations":null}`,
		// Descriptor with every field: data is base64, platform nested.
		`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/x","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2,"data":"e30="},"layers":[{"artifactType":"t","platform":{"variant":"v8","os.features":["f1"],"os.version":"10","os":"linux","architecture":"arm64"},"data":"","urls":["https://x/y?a=1&b=2"],"size":3,"digest":"d","mediaType":"m"}],"subject":{"mediaType":"s","digest":"sha256:e","size":9}}`,
		// Escapes and invalid UTF-8 inside values and keys get normalized.
		"{\"schemaVersion\":2,\"annotations\":{\"\\u003ckey\\u003e\":\"\\u2028\\ud800x\\u00e9\",\"raw\":\"\xff\xfe\",\"t\":\"\\t\\b\\f\\/\"},\"layers\":[]}",
		// Type errors.
		`{"schemaVersion":"2","layers":[]}`,
		`{"schemaVersion":2.0,"layers":[]}`,
		`{"schemaVersion":2,"layers":{}}`,
		`{"schemaVersion":2,"annotations":{"a":1}}`,
		`{"schemaVersion":2,"config":{"data":"not base64!"}}`,
		`[1,2]`,
		// Large numbers.
		`{"schemaVersion":9223372036854775807,"config":{"size":-9223372036854775808}}`,
		`{"schemaVersion":9223372036854775808}`,
		`{"schemaVersion":-0,"config":{"size":1e3}}`,
	}
	for _, m := range manifests {
		cases = append(cases, roundTrip("manifest", []byte(m), &Manifest{}))
	}

	indexes := []string{
		// Docker manifest list (platform.features is unknown to OCI and drops out).
		"{\n  \"schemaVersion\": 2,\n  \"mediaType\": \"application/vnd.docker.distribution.manifest.list.v2+json\",\n  \"manifests\": [\n    {\"mediaType\": \"application/vnd.docker.distribution.manifest.v2+json\", \"size\": 7143, \"digest\": \"sha256:e692\", \"platform\": {\"architecture\": \"ppc64le\", \"os\": \"linux\", \"features\": [\"sse4\"]}},\n    {\"mediaType\": \"application/vnd.docker.distribution.manifest.v2+json\", \"size\": 7682, \"digest\": \"sha256:5b0b\", \"platform\": {\"architecture\": \"amd64\", \"os\": \"linux\"}}\n  ]\n}",
		`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:1","size":1,"annotations":{"com.amazon.soci.image-manifest-digest":"sha256:2"},"platform":{"architecture":"amd64","os":"linux"},"artifactType":"application/vnd.amazon.soci.index.v2+json"}],"annotations":{"b":"","a":""}}`,
		`{"schemaVersion":2,"manifests":[]}`,
		`{"schemaVersion":2}`,
	}
	for _, m := range indexes {
		cases = append(cases, roundTrip("index", []byte(m), &Index{}))
	}

	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", " ")
	_ = enc.Encode(map[string]any{"go_version": runtime.Version(), "cases": cases})
}

func negZero() float64 {
	z := 0.0
	return -z * 1
}
