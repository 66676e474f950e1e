// Command prefetch_reference marshals SOCI prefetch artifacts and their SOCI index descriptors with
// Go's encoding/json, so tests can compare resources/soci/prefetch.py with real Go byte for byte.
//
// Input (stdin): one JSON object per line, either {"layer": "sha256:..", "spans": [[start, end, priority], ...]}
// or {"index": "<base64 SOCI index manifest>"}.
// Output (stdout): per input line, one line {"artifact": "<base64>", "descriptor": "<base64>"}, or for an
// index {"reencoded": "<base64>"}: the manifest decoded and encoded again the way a node checks a
// fetched SOCI index (soci/soci_index.go UnmarshalIndex + MarshalIndex: schemaVersion 2, the OCI
// manifest mediaType, config, layers, subject, annotations).
//
// The structs are declared field for field (names, order, tags, types) like soci-snapshotter's
// soci/prefetch.go (PrefetchArtifact, PrefetchSpan; compression.SpanID is int32) and
// image-spec specs-go v1.1.0's Descriptor; the descriptor is built as soci's
// storePrefetchLayer builds it (media type, digest, size, one layer-digest annotation).
package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"os"
)

type SpanID int32

type PrefetchArtifact struct {
	Version       string         `json:"version"`
	PrefetchSpans []PrefetchSpan `json:"prefetch_spans"`
}

type PrefetchSpan struct {
	StartSpan SpanID `json:"start_span"`
	EndSpan   SpanID `json:"end_span"`
	Priority  int    `json:"priority,omitempty"`
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

type Versioned struct {
	SchemaVersion int `json:"schemaVersion"`
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

type input struct {
	Layer string     `json:"layer"`
	Spans [][3]int64 `json:"spans"`
	Index []byte     `json:"index"`
}

func reencodeIndex(data []byte) []byte {
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		panic(err)
	}
	out := Manifest{Config: m.Config, Layers: m.Layers, Subject: m.Subject, Annotations: m.Annotations}
	out.SchemaVersion = 2
	out.MediaType = "application/vnd.oci.image.manifest.v1+json"
	encoded, err := json.Marshal(out)
	if err != nil {
		panic(err)
	}
	return encoded
}

func main() {
	scanner := bufio.NewScanner(os.Stdin)
	scanner.Buffer(make([]byte, 1<<20), 1<<26)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	for scanner.Scan() {
		var in input
		if err := json.Unmarshal(scanner.Bytes(), &in); err != nil {
			panic(err)
		}
		if in.Index != nil {
			line, _ := json.Marshal(map[string]string{"reencoded": base64.StdEncoding.EncodeToString(reencodeIndex(in.Index))})
			out.Write(line)
			out.WriteString("\n")
			continue
		}
		artifact := PrefetchArtifact{Version: "1.0", PrefetchSpans: make([]PrefetchSpan, 0)}
		for _, s := range in.Spans {
			artifact.PrefetchSpans = append(artifact.PrefetchSpans, PrefetchSpan{StartSpan: SpanID(s[0]), EndSpan: SpanID(s[1]), Priority: int(s[2])})
		}
		data, err := json.Marshal(artifact)
		if err != nil {
			panic(err)
		}
		sum := sha256.Sum256(data)
		desc := Descriptor{
			MediaType:   "application/vnd.amazon.soci.prefetch.v1+json",
			Digest:      "sha256:" + hex.EncodeToString(sum[:]),
			Size:        int64(len(data)),
			Annotations: map[string]string{"com.amazon.soci.image-layer-digest": in.Layer},
		}
		descData, err := json.Marshal(desc)
		if err != nil {
			panic(err)
		}
		line, _ := json.Marshal(map[string]string{
			"artifact":   base64.StdEncoding.EncodeToString(data),
			"descriptor": base64.StdEncoding.EncodeToString(descData),
		})
		out.Write(line)
		out.WriteString("\n")
	}
	if err := scanner.Err(); err != nil {
		panic(err)
	}
}
