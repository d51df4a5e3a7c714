package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/regcenter/registry/acl"
	"github.com/regcenter/registry/fsm"
	"github.com/regcenter/registry/fsm/fsmpb"
)

// The initial management token (Consul's acl.tokens.initial_management):
// a secret the operator chooses and gives to the servers, so that a new
// cluster with ACLs on comes up already bootstrapped, with a management
// token whose secret is known in advance — no `registryctl acl bootstrap`
// race and nothing to copy out of its output. The leader, once its barrier
// has applied everything from earlier terms, proposes the ACL bootstrap with
// the secret's hash (never the secret) and a fresh accessor id; the FSM's
// bootstrap stays the one-time, deterministic command it is. Once the
// cluster is bootstrapped, by this or by `acl bootstrap`, the setting does
// nothing: unlike Consul, a deleted initial token is not created again on
// the next leader change, so deleting it revokes it for good.

// initialTokenDescription is the description of the token made from
// Config.ACLInitialManagementToken.
const initialTokenDescription = "initial management token"

// MaxTokenFileBytes bounds a token file read by ReadTokenFile.
const MaxTokenFileBytes = 1024

// MinTokenSecretLen is the shortest secret ReadTokenFile accepts. Only the
// SHA-256 of a secret is stored, which a search can reverse for a short or
// guessable one; the secrets the nodes make are random UUIDs (36
// characters, 122 random bits), and so should a chosen one be.
const MinTokenSecretLen = 16

// ReadTokenFile reads a token secret from a file (--acl-token-file,
// --acl-initial-management-token-file): the file's content with surrounding
// white space trimmed, which must be a bearer token as acl.ParseBearer
// accepts it ([A-Za-z0-9-._~+/], optional trailing '='), at least
// MinTokenSecretLen characters, and the file at most MaxTokenFileBytes.
// Errors name the file, never its content.
func ReadTokenFile(path string) (acl.Secret, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxTokenFileBytes+1))
	if err != nil {
		return "", fmt.Errorf("token file %s: %w", path, err)
	}
	if len(b) > MaxTokenFileBytes {
		return "", fmt.Errorf("token file %s: longer than %d bytes", path, MaxTokenFileBytes)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("token file %s: is empty", path)
	}
	if _, err := acl.ParseBearer("Bearer " + s); err != nil {
		return "", fmt.Errorf("token file %s: %w", path, err)
	}
	if len(s) < MinTokenSecretLen {
		return "", fmt.Errorf("token file %s: the secret is %d characters, at least %d are needed (use a random UUID)", path, len(s), MinTokenSecretLen)
	}
	return acl.Secret(s), nil
}

// bootstrapACLs runs on the leader after its barrier, before the expiry
// checker starts: with ACLs on and an initial management token configured,
// it makes sure the cluster is bootstrapped, with that token if it is not
// yet. It retries a failed proposal every second until it succeeds, the
// cluster turns out to be bootstrapped already, or leadership ends (ctx);
// a proposal that keeps failing means no quorum, when the checker could
// not act either. It never logs the secret.
func (n *Node) bootstrapACLs(ctx context.Context) {
	secret := n.cfg.ACLInitialManagementToken
	if !n.cfg.ACLEnabled || secret == "" {
		return
	}
	hash := acl.HashSecret(secret)
	if tok, _, _, ok := n.fsm.ACLResolve(hash); ok {
		n.log.Debug("the initial management token exists", "accessor_id", tok.AccessorID)
		return
	}
	accessor := acl.NewAccessorID()
	for {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		res, err := fsm.Propose[*fsm.ACLResult](pctx, n, &fsmpb.ACLBootstrap{
			AccessorId:  accessor,
			SecretHash:  hash,
			Description: initialTokenDescription,
		})
		cancel()
		switch {
		case err == nil:
			n.log.Info("ACLs bootstrapped with the initial management token", "accessor_id", accessor, "index", res.Index)
			return
		case errors.Is(err, fsm.ErrACLBootstrapped):
			n.log.Info("ACLs were bootstrapped before: the initial management token is not used", "error", err)
			return
		case errors.Is(err, fsm.ErrACLConflict):
			// Another token has this secret: retrying cannot help.
			n.log.Error("cannot bootstrap the ACLs with the initial management token", "error", err)
			return
		case ctx.Err() != nil || errors.Is(err, fsm.ErrLeadershipLost) || !n.IsLeader():
			return // the next leader tries
		}
		n.log.Warn("bootstrapping the ACLs with the initial management token; retrying", "error", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}
