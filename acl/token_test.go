package acl

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"testing"
)

var uuidV4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestNewSecretAndAccessorID(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		for _, s := range []string{string(NewSecret()), NewAccessorID()} {
			if !uuidV4.MatchString(s) {
				t.Fatalf("%q is not a version 4 UUID", s)
			}
			if seen[s] {
				t.Fatalf("%q came twice", s)
			}
			seen[s] = true
		}
	}
}

func TestHashSecret(t *testing.T) {
	// SHA-256("abc"), FIPS 180-2 appendix B.1.
	want := "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
	if got := hex.EncodeToString(HashSecret("abc")); got != want {
		t.Fatalf("HashSecret(abc) = %s, want %s", got, want)
	}
}

func TestTokenMatches(t *testing.T) {
	tok, secret := NewToken("ci", "deploy")
	if !tok.Matches(secret) {
		t.Fatal("a token does not match its own secret")
	}
	for _, s := range []Secret{NewSecret(), "", secret[:len(secret)-1], secret + "0"} {
		if tok.Matches(s) {
			t.Errorf("the token matches another secret")
		}
	}
	if (&Token{}).Matches("") {
		t.Error("a token without a hash matches the empty secret")
	}
	if (&Token{SecretHash: HashSecret("s")[:16]}).Matches("s") {
		t.Error("a token with a short hash matches")
	}
}

// TestSecretNeverPrinted: fmt with any verb, slog with the text and JSON
// handlers, and JSON never show a token's secret or its hash.
func TestSecretNeverPrinted(t *testing.T) {
	tok, secret := NewToken("ci", "deploy")
	h := tok.SecretHash
	forbidden := []string{
		string(secret), strings.ToUpper(string(secret)), strings.ReplaceAll(string(secret), "-", ""),
		hex.EncodeToString(h), base64.StdEncoding.EncodeToString(h), fmt.Sprint(h), fmt.Sprintf("%#v", h), string(secret[:8]),
	}
	var out []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T"} {
		out = append(out,
			fmt.Sprintf(verb, secret), fmt.Sprintf(verb, &secret),
			fmt.Sprintf(verb, tok), fmt.Sprintf(verb, *tok),
			fmt.Sprintf(verb, []any{tok, secret}),
			fmt.Sprintf(verb, struct {
				T *Token
				S Secret
			}{tok, secret}))
	}
	out = append(out, fmt.Sprint(secret), fmt.Sprintln(tok, secret))
	var buf bytes.Buffer
	for _, hd := range []slog.Handler{slog.NewTextHandler(&buf, nil), slog.NewJSONHandler(&buf, nil)} {
		l := slog.New(hd)
		l.Info("token", "token", tok, "secret", secret)
		l.Info("token", "value", *tok, "any", any(secret))
		l.Info("token", slog.Any("token", tok), slog.Group("g", "s", secret))
	}
	out = append(out, buf.String())
	// Not a map key: encoding/json writes string-kinded keys as they are.
	j, err := json.Marshal(struct {
		S Secret
		P *Secret
		L []Secret
	}{secret, &secret, []Secret{secret}})
	if err != nil {
		t.Fatal(err)
	}
	out = append(out, string(j))
	all := strings.Join(out, "\n")
	for _, f := range forbidden {
		if strings.Contains(all, f) {
			t.Fatalf("output contains %q:\n%s", f, all)
		}
	}
	if !strings.Contains(fmt.Sprint(tok), tok.AccessorID) || !strings.Contains(buf.String(), `accessor_id=`+tok.AccessorID) ||
		!strings.Contains(buf.String(), `"accessor_id":"`+tok.AccessorID+`"`) {
		t.Fatalf("the accessor id is missing:\n%s", all)
	}
}

func TestParseBearer(t *testing.T) {
	uuid := string(NewSecret())
	for _, tc := range []struct{ in, want string }{
		{"Bearer " + uuid, uuid},
		{"bearer abc", "abc"},
		{"BEARER abc", "abc"},
		{"bEaReR abc", "abc"},
		{"Bearer   abc", "abc"},
		{"Bearer abc==", "abc=="},
		{"Bearer A-Z.a_z~0+9/", "A-Z.a_z~0+9/"},
		{"Bearer " + strings.Repeat("a", MaxAuthorizationLen-7), strings.Repeat("a", MaxAuthorizationLen-7)},
	} {
		got, err := ParseBearer(tc.in)
		if err != nil || string(got) != tc.want {
			t.Errorf("ParseBearer(%q) = %q, %v; want %q", tc.in, string(got), err, tc.want)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"", "the scheme is not Bearer"},
		{"Bearer", "no space after Bearer"},
		{"Bearer ", "the token is empty"},
		{"Bearer    ", "the token is empty"},
		{"Basic dXNlcjpzZWNyZXQ=", "the scheme is not Bearer"},
		{"Bearerabc", "no space after Bearer"},
		{"Bearer\tabc", "no space after Bearer"},
		{" Bearer abc", "the scheme is not Bearer"},
		{"Bearer abc ", "not allowed at byte 10"},
		{"Bearer abc\n", "not allowed at byte 10"},
		{"Bearer a bc", "not allowed at byte 8"},
		{"Bearer =abc", "not allowed at byte 7"},
		{"Bearer ==", "not allowed at byte 7"},
		{"Bearer ab=c", "not allowed at byte 10"},
		{"Bearer ab\x00", "not allowed at byte 9"},
		{"Bearer abé", "not allowed at byte 9"},
		{"Bearer a,b", "not allowed at byte 8"},
		{"Bearer " + strings.Repeat("a", MaxAuthorizationLen-6), "the value is 513 bytes, the limit is 512"},
	} {
		got, err := ParseBearer(tc.in)
		if err == nil {
			t.Errorf("ParseBearer(%q) = %q, want an error", tc.in, string(got))
			continue
		}
		if !errors.Is(err, ErrInvalidBearer) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseBearer(%q) error = %v, want ErrInvalidBearer and %q", tc.in, err, tc.want)
		}
		if strings.Contains(err.Error(), "abc") || strings.Contains(err.Error(), "dXNl") {
			t.Errorf("ParseBearer(%q) error %q quotes the value", tc.in, err)
		}
	}
}

func TestHashLength(t *testing.T) {
	if n := len(HashSecret(NewSecret())); n != sha256.Size {
		t.Fatalf("hash is %d bytes", n)
	}
}
