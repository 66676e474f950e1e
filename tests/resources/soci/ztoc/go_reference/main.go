// Command go_reference prints the TOC that soci-snapshotter's metadataFromTarReader
// (ztoc/toc_builder.go) builds for the tar stream on stdin, as JSON, using Go's real
// archive/tar. The tests compare resources/soci/ztoc/toc.py against it.
//
// Byte strings are JSON base64 ([]byte) so non-UTF-8 names compare exactly. Run with TZ=UTC:
// soci formats ModTime with time.Time.MarshalText in the local zone.
package main

import (
	"archive/tar"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
)

type positionTrackerReader struct {
	r   io.Reader
	pos int64
}

func (p *positionTrackerReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.pos += int64(n)
	return n, err
}

type record struct {
	Key   []byte `json:"key"`
	Value []byte `json:"value"`
}

type entry struct {
	Name     []byte   `json:"name"`
	Type     string   `json:"type"`
	Offset   int64    `json:"uncompressed_offset"`
	Size     int64    `json:"uncompressed_size"`
	Linkname []byte   `json:"linkname"`
	Mode     int64    `json:"mode"`
	UID      uint32   `json:"uid"`
	GID      uint32   `json:"gid"`
	Uname    []byte   `json:"uname"`
	Gname    []byte   `json:"gname"`
	ModTime  []byte   `json:"mod_time"`
	Devmajor int64    `json:"devmajor"`
	Devminor int64    `json:"devminor"`
	Xattrs   []record `json:"xattrs"`
}

type result struct {
	Entries []entry `json:"entries"`
	Size    int64   `json:"uncompressed_archive_size"`
	Error   string  `json:"error,omitempty"`
}

func getType(header *tar.Header) (string, error) {
	switch header.Typeflag {
	case tar.TypeLink:
		return "hardlink", nil
	case tar.TypeSymlink:
		return "symlink", nil
	case tar.TypeDir:
		return "dir", nil
	case tar.TypeReg:
		return "reg", nil
	case tar.TypeChar:
		return "char", nil
	case tar.TypeBlock:
		return "block", nil
	case tar.TypeFifo:
		return "fifo", nil
	default:
		return "", fmt.Errorf("unsupported input tar entry %q", header.Typeflag)
	}
}

func build(r io.Reader) result {
	pt := &positionTrackerReader{r: r}
	tr := tar.NewReader(pt)
	res := result{Entries: []entry{}}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			res.Error = fmt.Sprintf("error while reading tar header: %v", err)
			return res
		}
		fileType, err := getType(hdr)
		if err != nil {
			res.Error = err.Error()
			return res
		}
		keys := make([]string, 0, len(hdr.PAXRecords))
		for k := range hdr.PAXRecords {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		records := []record{}
		for _, k := range keys {
			records = append(records, record{[]byte(k), []byte(hdr.PAXRecords[k])})
		}
		modTime, _ := hdr.ModTime.MarshalText()
		res.Entries = append(res.Entries, entry{
			Name: []byte(hdr.Name), Type: fileType, Offset: pt.pos, Size: hdr.Size,
			Linkname: []byte(hdr.Linkname), Mode: hdr.Mode, UID: uint32(hdr.Uid),
			GID: uint32(hdr.Gid), Uname: []byte(hdr.Uname), Gname: []byte(hdr.Gname),
			ModTime: modTime, Devmajor: hdr.Devmajor, Devminor: hdr.Devminor, Xattrs: records,
		})
	}
	res.Size = pt.pos
	return res
}

func main() {
	// One tar per file argument; one JSON line per tar.
	enc := json.NewEncoder(os.Stdout)
	for _, path := range os.Args[1:] {
		f, err := os.Open(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		res := build(struct{ io.Reader }{f}) // hide io.Seeker, as soci's gzip reader does
		f.Close()
		if err := enc.Encode(res); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}
}
