package udpbeat_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/regcenter/registry/udpbeat"
)

// testKey is 0x00, 0x01, ..., 0x1f.
func testKey() []byte {
	k := make([]byte, 32)
	for i := range k {
		k[i] = byte(i)
	}
	return k
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The documented example datagram, tag included; the tag was computed with
// Python's hmac module, independently of this package.
const exampleDatagram = "01 00 06 6f7264657273 02 6131 0000000000000007 0000000000000001" +
	"6faba6f705c1687abc153b78e80839bfb14e313dd0e73e959eae04d63db7191d"

func TestAppendMatchesTheDocumentedExample(t *testing.T) {
	b := udpbeat.Beat{Service: "orders", ID: "a1", Incarnation: 7, Seq: 1}
	got := udpbeat.Append(nil, b, testKey())
	if want := unhex(t, exampleDatagram); !bytes.Equal(got, want) {
		t.Fatalf("Append = %x\nwant     %x", got, want)
	}
	parsed, err := udpbeat.Parse(got)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(b, parsed); diff != "" {
		t.Errorf("Parse (-want +got):\n%s", diff)
	}
	if !udpbeat.Verify(got, testKey()) {
		t.Error("Verify refused the datagram under its key")
	}
}

// The key derivation vector, computed with Python's hmac module.
func TestDeriveKeyMatchesTheDocumentedDerivation(t *testing.T) {
	want := unhex(t, "50783012a776b64a70e992008fe5a35cc9faa6ace1371adbf309d95aed68baad")
	if got := udpbeat.DeriveKey(testKey(), "orders", "a1", 7); !bytes.Equal(got, want) {
		t.Fatalf("DeriveKey = %x, want %x", got, want)
	}
	base := udpbeat.DeriveKey(testKey(), "orders", "a1", 7)
	for name, other := range map[string][]byte{
		"another incarnation": udpbeat.DeriveKey(testKey(), "orders", "a1", 8),
		"another id":          udpbeat.DeriveKey(testKey(), "orders", "a2", 7),
		"another service":     udpbeat.DeriveKey(testKey(), "orderz", "a1", 7),
		"names shifted":       udpbeat.DeriveKey(testKey(), "ordersa", "1", 7),
		"another secret":      udpbeat.DeriveKey(bytes.Repeat([]byte{9}, 32), "orders", "a1", 7),
	} {
		if bytes.Equal(other, base) {
			t.Errorf("%s gives the same key", name)
		}
	}
}

func TestVerifyRefusesEveryChange(t *testing.T) {
	d := udpbeat.Append(nil, udpbeat.Beat{Service: "orders", ID: "a1", Incarnation: 7, Seq: 1}, testKey())
	for i := range d {
		bad := bytes.Clone(d)
		bad[i] ^= 0x01
		if udpbeat.Verify(bad, testKey()) {
			t.Errorf("a flipped bit in byte %d still verifies", i)
		}
	}
	if udpbeat.Verify(d, bytes.Repeat([]byte{1}, 32)) {
		t.Error("verifies under another key")
	}
	if udpbeat.Verify(d, nil) {
		t.Error("verifies under an empty key")
	}
}

func TestParseRejectsMalformedDatagrams(t *testing.T) {
	good := func(b udpbeat.Beat) []byte { return udpbeat.Append(nil, b, testKey()) }
	base := udpbeat.Beat{Service: "orders", ID: "a1", Incarnation: 7, Seq: 1}
	with := func(fn func(*udpbeat.Beat)) []byte { b := base; fn(&b); return good(b) }
	tests := map[string][]byte{
		"empty":             nil,
		"too short":         good(base)[:udpbeat.MinDatagramSize-1],
		"trailing byte":     append(good(base), 0),
		"one byte short":    good(base)[:len(good(base))-1],
		"version 2":         func() []byte { d := good(base); d[0] = 2; return d }(),
		"unknown flag":      with(func(b *udpbeat.Beat) { b.Flags = 0x02 }),
		"reply flag":        with(func(b *udpbeat.Beat) { b.Flags = 0x80 }),
		"empty service":     with(func(b *udpbeat.Beat) { b.Service = "" }),
		"empty id":          with(func(b *udpbeat.Beat) { b.ID = "" }),
		"service with /":    with(func(b *udpbeat.Beat) { b.Service = "a/b" }),
		"id with a space":   with(func(b *udpbeat.Beat) { b.ID = "a b" }),
		"service of 129":    with(func(b *udpbeat.Beat) { b.Service = strings.Repeat("s", 129) }),
		"incarnation 2^53":  with(func(b *udpbeat.Beat) { b.Incarnation = 1 << 53 }),
		"seq 0":             with(func(b *udpbeat.Beat) { b.Seq = 0 }),
		"service overruns":  func() []byte { d := good(base); d[2] = 250; return d }(),
		"id length too big": func() []byte { d := good(base); d[3+6] = 3; return d }(),
		"too long":          make([]byte, udpbeat.MaxDatagramSize+1),
	}
	for name, d := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := udpbeat.Parse(d); !errors.Is(err, udpbeat.ErrMalformed) {
				t.Errorf("Parse = %v, want ErrMalformed", err)
			}
		})
	}
	// The limits themselves parse.
	for _, b := range []udpbeat.Beat{
		{Service: "s", ID: "i", Seq: 1},
		{Service: strings.Repeat("s", 128), ID: strings.Repeat("i", 128), Incarnation: 1<<53 - 1, Seq: ^uint64(0), Flags: udpbeat.FlagReply},
	} {
		d := good(b)
		got, err := udpbeat.Parse(d)
		if err != nil || got != b {
			t.Errorf("Parse(%d bytes) = %+v, %v; want %+v", len(d), got, err, b)
		}
	}
}

func TestReplyRoundTrip(t *testing.T) {
	r := udpbeat.Reply{Status: udpbeat.StatusFenced, Seq: 42, Current: 9}
	d := udpbeat.AppendReply(nil, r, testKey())
	if len(d) != udpbeat.ReplySize || len(d) >= udpbeat.MinDatagramSize {
		t.Fatalf("a reply is %d bytes; want %d, less than the smallest datagram (%d)", len(d), udpbeat.ReplySize, udpbeat.MinDatagramSize)
	}
	got, err := udpbeat.ParseReply(d, testKey())
	if err != nil || got != r {
		t.Fatalf("ParseReply = %+v, %v; want %+v", got, err, r)
	}
	if _, err := udpbeat.ParseReply(d, bytes.Repeat([]byte{1}, 32)); !errors.Is(err, udpbeat.ErrBadMAC) {
		t.Errorf("ParseReply under another key = %v, want ErrBadMAC", err)
	}
	if _, err := udpbeat.Parse(d); err == nil {
		t.Error("a reply frame parses as a datagram")
	}
}

// FuzzParse: Parse never panics, and whatever it accepts re-encodes to the
// same bytes before the tag.
func FuzzParse(f *testing.F) {
	f.Add(unhex(f, exampleDatagram))
	f.Add(udpbeat.Append(nil, udpbeat.Beat{Flags: 1, Service: "s", ID: "i", Incarnation: 1, Seq: 1}, testKey()))
	f.Add([]byte{1, 0, 0})
	f.Fuzz(func(t *testing.T, d []byte) {
		b, err := udpbeat.Parse(d)
		if err != nil {
			if !errors.Is(err, udpbeat.ErrMalformed) {
				t.Fatalf("Parse error %v does not wrap ErrMalformed", err)
			}
			return
		}
		again := udpbeat.Append(nil, b, testKey())
		if !bytes.Equal(again[:len(again)-udpbeat.TagSize], d[:len(d)-udpbeat.TagSize]) {
			t.Fatalf("Parse(%x) = %+v, which encodes to %x", d, b, again)
		}
	})
}
