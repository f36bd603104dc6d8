package authz

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/tollgate-dev/tollgate/internal/vtcodec"
	"github.com/tollgate-dev/tollgate/jwks"
	"github.com/tollgate-dev/tollgate/policy"
)

// The decision cache hands the same policy.Result (its header slices and
// dynamic metadata) to every Check it answers. Building and marshaling
// the responses must only read it: concurrent Checks under -race.
func TestCachedDecisionIsSharedReadOnly(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	rego := `package tollgate.authz

allow := {
	"allowed": true,
	"headers": {"x-route": "blue", "x-tier": ["a", "b"]},
	"request_headers_to_remove": ["x-debug"],
	"response_headers_to_add": {"x-policy": "v2"},
	"query_parameters_to_set": {"tenant": "acme"},
	"query_parameters_to_remove": ["debug"],
	"dynamic_metadata": {"subject": input.identity.subject, "n": 1},
} if input.identity.type == "jwt"
`
	if err := os.WriteFile(filepath.Join(dir, "policy.rego"), []byte(rego), 0o644); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	e, err := policy.New(policy.Config{Paths: []string{dir}, Timeout: 5 * time.Second}, policy.WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Stop(t.Context()) })
	v := &fakeVerifier{tokens: map[string]*jwks.Token{"jwt-bob": tok("bob", []string{"orders-api"}, map[string]any{"roles": []any{"reader"}})}}
	c, err := New(Config{
		Services:      []Service{{Name: "orders", Hosts: []string{"orders.example.com"}, Audiences: []string{"orders-api"}}},
		ClaimHeaders:  []ClaimHeader{{Claim: "sub", Header: "x-user-id"}},
		RemoveHeaders: []string{"authorization"},
	}, v, WithPolicy(e), WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	srv := NewGRPCServer(c)
	codec := vtcodec.Codec()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 200 {
				resp, err := srv.Check(t.Context(), envoyRequest("orders.example.com", "/?debug=1", "Bearer jwt-bob", nil))
				if err != nil || resp.GetStatus().GetCode() != int32(codes.OK) {
					t.Errorf("Check = %v, %v; want allowed", resp, err)
					return
				}
				if md := resp.GetDynamicMetadata().GetFields()["subject"].GetStringValue(); md != "bob" {
					t.Errorf("dynamic metadata subject = %q; want bob", md)
					return
				}
				buf, err := codec.Marshal(resp)
				if err != nil {
					t.Errorf("marshal: %v", err)
					return
				}
				buf.Free()
			}
		})
	}
	wg.Wait()
}
