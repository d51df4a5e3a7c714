package acl

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// Secret is a token's secret, the bearer credential. It prints as
// "[redacted]" with every fmt verb and in slog, so it cannot be logged by
// mistake; string(s) gives the value to whoever must send it. JSON and
// other text encodings get "[redacted]" too (MarshalText), except as a map
// key, which encoding/json writes as the string it is: key maps by
// HashSecret, never by Secret.
type Secret string

const redacted = "[redacted]"

func (Secret) String() string               { return redacted }
func (Secret) GoString() string             { return redacted }
func (Secret) LogValue() slog.Value         { return slog.StringValue(redacted) }
func (Secret) Format(f fmt.State, _ rune)   { io.WriteString(f, redacted) }
func (Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// NewSecret returns a fresh secret: a random (version 4) UUID, 122 bits
// from crypto/rand, the format of Consul's SecretID.
func NewSecret() Secret { return Secret(newUUID()) }

// NewAccessorID returns a fresh accessor id, the public name of a token: a
// random UUID like the secret, but safe to log and show.
func NewAccessorID() string { return newUUID() }

func newUUID() string {
	var b [16]byte
	rand.Read(b[:])         // never returns an error; it crashes the program if it cannot read
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // variant RFC 9562
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:36], b[10:16])
	return string(s[:])
}

// HashSecret returns the SHA-256 of a secret: what is stored and replicated
// instead of the secret. A slow password KDF (bcrypt, argon2) is not needed:
// it protects guessable passwords, while a secret from NewSecret has 122
// random bits, which no offline search of the hash can cover. A fast hash
// also keeps the lookup at every request cheap.
func HashSecret(s Secret) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

// Token is a token as stored: its public accessor id, the hash of its
// secret and what it grants. It prints (fmt, slog) as its accessor id only.
type Token struct {
	AccessorID  string
	SecretHash  []byte
	Description string
	// Policies names the policies whose rules the token holds.
	Policies []string
	// Management tokens may do everything (Management()).
	Management bool
}

// NewToken returns a token with fresh ids and the secret to hand to its
// holder once; only the hash is kept in the token.
func NewToken(description string, policies ...string) (*Token, Secret) {
	s := NewSecret()
	return &Token{
		AccessorID:  NewAccessorID(),
		SecretHash:  HashSecret(s),
		Description: description,
		Policies:    policies,
	}, s
}

// Matches reports, in constant time, whether s is the token's secret.
func (t *Token) Matches(s Secret) bool {
	return len(t.SecretHash) == sha256.Size && subtle.ConstantTimeCompare(HashSecret(s), t.SecretHash) == 1
}

func (t Token) String() string { return "token " + t.AccessorID }

// GoString keeps %#v from printing the fields.
func (t Token) GoString() string { return t.String() }

// Format prints the token as String does with every verb.
func (t Token) Format(f fmt.State, _ rune) { io.WriteString(f, t.String()) }

// LogValue logs the accessor id only, under the key accessor_id.
func (t Token) LogValue() slog.Value {
	return slog.GroupValue(slog.String("accessor_id", t.AccessorID))
}

// MaxAuthorizationLen bounds an Authorization header value (or gRPC
// "authorization" metadata value) that ParseBearer reads, in bytes.
const MaxAuthorizationLen = 512

// ParseBearer reads an "Authorization: Bearer <secret>" value as RFC 6750
// has it: the scheme (any case), one or more spaces, and a token of
// [A-Za-z0-9-._~+/] with optional trailing '='. Nothing else is accepted:
// no other scheme, no tabs, no space around the value. Errors wrap
// ErrInvalidBearer and never quote the value.
func ParseBearer(v string) (Secret, error) {
	if len(v) > MaxAuthorizationLen {
		return "", fmt.Errorf("%w: the value is %d bytes, the limit is %d", ErrInvalidBearer, len(v), MaxAuthorizationLen)
	}
	const scheme = "Bearer"
	if len(v) < len(scheme) || !strings.EqualFold(v[:len(scheme)], scheme) {
		return "", fmt.Errorf("%w: the scheme is not Bearer", ErrInvalidBearer)
	}
	rest := v[len(scheme):]
	tok := strings.TrimLeft(rest, " ")
	if len(tok) == len(rest) {
		return "", fmt.Errorf("%w: no space after Bearer", ErrInvalidBearer)
	}
	if tok == "" {
		return "", fmt.Errorf("%w: the token is empty", ErrInvalidBearer)
	}
	i := 0
	for i < len(tok) && b64tokenByte(tok[i]) {
		i++
	}
	j := i
	for j < len(tok) && tok[j] == '=' {
		j++
	}
	if i == 0 {
		j = 0 // the token must start with a token character, not '='
	}
	if i == 0 || j != len(tok) {
		return "", fmt.Errorf("%w: the token has a character not allowed at byte %d", ErrInvalidBearer, len(v)-len(tok)+j)
	}
	return Secret(tok), nil
}

func b64tokenByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/'
}
