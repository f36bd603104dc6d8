package session

import (
	"strings"
	"testing"

	"github.com/tollgate-dev/tollgate/internal/reason"
)

func TestNewIDIsCanonicalAndUnique(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for range 1000 {
		id, h := newID()
		got, ok := parseID(id)
		if !ok || got != h {
			t.Fatalf("parseID(newID()) = %v, %v; want the hash newID returned", ok, got == h)
		}
		if seen[id] {
			t.Fatalf("newID repeated an ID")
		}
		seen[id] = true
	}
}

func TestIDHashAndFingerprint(t *testing.T) {
	t.Parallel()
	id, h := newID()
	got, err := IDHash(id)
	if err != nil || got != hashHex(h) {
		t.Fatalf("IDHash = %s, %v; want %s", got, err, hashHex(h))
	}
	_, err = IDHash("nope")
	wantCode(t, "IDHash(nope)", err, reason.SessionMalformed)
	if fp := Fingerprint("token"); len(fp) != 12 || strings.Contains(fp, "token") {
		t.Fatalf("Fingerprint = %q; want 12 hex digits", fp)
	}
}

func TestParseIDDoesNotAllocate(t *testing.T) {
	id, _ := newID()
	for _, in := range []string{id, "", strings.Repeat("A", 10<<10), "!" + id[1:]} {
		if n := testing.AllocsPerRun(100, func() { parseID(in) }); n != 0 {
			t.Fatalf("parseID allocates %v times; want 0", n)
		}
	}
}

func TestIDFromRequest(t *testing.T) {
	t.Parallel()
	const c, h = "tollgate_session", "x-session-id"
	tests := []struct {
		name    string
		headers map[string]string
		want    string
		present bool
	}{
		{"no headers → absent", nil, "", false},
		{"only the cookie", map[string]string{"cookie": "tollgate_session=abc"}, "abc", true},
		{"cookie among several, with spaces", map[string]string{"cookie": "a=1;  tollgate_session=abc ; b=2"}, "abc", true},
		{"tab around the separator", map[string]string{"cookie": "a=1;\ttollgate_session=abc"}, "abc", true},
		{"quoted value → unquoted", map[string]string{"cookie": `a=1; tollgate_session="abc"`}, "abc", true},
		{"first of two session cookies", map[string]string{"cookie": "tollgate_session=first; tollgate_session=second"}, "first", true},
		{"name is a prefix of another cookie → absent", map[string]string{"cookie": "tollgate_session_x=abc; xtollgate_session=def"}, "", false},
		{"names are case-sensitive", map[string]string{"cookie": "Tollgate_Session=abc"}, "", false},
		{"value with '='", map[string]string{"cookie": "tollgate_session=a=b"}, "a=b", true},
		{"empty value → present, empty", map[string]string{"cookie": "tollgate_session="}, "", true},
		{"name without '=' → absent", map[string]string{"cookie": "tollgate_session; a=1"}, "", false},
		{"header wins over the cookie", map[string]string{"cookie": "tollgate_session=c", h: "hdr"}, "hdr", true},
		{"empty header → present, empty", map[string]string{h: ""}, "", true},
		{"other headers only", map[string]string{"authorization": "Bearer x"}, "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, present := IDFromRequest(tc.headers, c, h)
			if got != tc.want || present != tc.present {
				t.Fatalf("IDFromRequest(%v) = %q, %v; want %q, %v", tc.headers, got, present, tc.want, tc.present)
			}
		})
	}
	if got, ok := IDFromRequest(map[string]string{h: "x"}, c, ""); ok {
		t.Fatalf("IDFromRequest with header source disabled = %q; want absent", got)
	}
	if got, ok := IDFromRequest(map[string]string{"cookie": "tollgate_session=x"}, "", h); ok {
		t.Fatalf("IDFromRequest with cookie source disabled = %q; want absent", got)
	}
}

func TestStripCookie(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in, want string
		removed        bool
	}{
		{"absent → unchanged", "a=1; b=2", "a=1; b=2", false},
		{"empty header", "", "", false},
		{"only cookie → empty", "s=x", "", true},
		{"first", "s=x; a=1; b=2", "a=1; b=2", true},
		{"middle", "a=1; s=x; b=2", "a=1; b=2", true},
		{"last", "a=1; b=2; s=x", "a=1; b=2", true},
		{"no spaces kept as sent", "a=1;s=x;b=2", "a=1;b=2", true},
		{"odd spacing of others kept byte for byte", "a=1 ;  s=x;   b = 2 ", "a=1 ;   b = 2 ", true},
		{"every occurrence", "s=1; a=1; s=2; s=3", "a=1", true},
		{"quoted value", `a="q v"; s="x"`, `a="q v"`, true},
		{"prefix names untouched", "s_x=1; s=2; xs=3", "s_x=1; xs=3", true},
		{"empty segments dropped", "a=1;; s=x;", "a=1", true},
		{"only session cookies and blanks → empty", " s=1 ; ; s=2 ", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, removed := StripCookie(tc.in, "s")
			if got != tc.want || removed != tc.removed {
				t.Fatalf("StripCookie(%q) = %q, %v; want %q, %v", tc.in, got, removed, tc.want, tc.removed)
			}
		})
	}
}

func TestCookieFunctionsDoNotAllocateWhenAbsent(t *testing.T) {
	headers := map[string]string{"cookie": "a=1; b=2; theme=dark; lang=en", "authorization": "Bearer x"}
	if n := testing.AllocsPerRun(100, func() { IDFromRequest(headers, "tollgate_session", "x-session-id") }); n != 0 {
		t.Fatalf("IDFromRequest allocates %v times; want 0", n)
	}
	if n := testing.AllocsPerRun(100, func() { StripCookie(headers["cookie"], "tollgate_session") }); n != 0 {
		t.Fatalf("StripCookie allocates %v times; want 0", n)
	}
	present := map[string]string{"cookie": "a=1; tollgate_session=abc"}
	if n := testing.AllocsPerRun(100, func() { IDFromRequest(present, "tollgate_session", "x-session-id") }); n != 0 {
		t.Fatalf("IDFromRequest (present) allocates %v times; want 0", n)
	}
}

// pairs returns the trimmed non-empty segments of a Cookie header and
// whether each is a pair named name.
func segments(h, name string) (kept []string, matched int) {
	for _, seg := range strings.Split(h, ";") {
		if n, _, ok := splitPair(seg); ok && n == name {
			matched++
			continue
		}
		if trimOWS(seg) != "" {
			kept = append(kept, trimOWS(seg))
		}
	}
	return kept, matched
}

func FuzzStripCookie(f *testing.F) {
	for _, seed := range []struct{ h, n string }{
		{"a=1; tollgate_session=x; b=2", "tollgate_session"},
		{"s=x", "s"},
		{`a="1"; s="x y"; ;b`, "s"},
		{"s = x ;\ts=y", "s"},
		{"", "s"},
		{"=;=;s=", "s"},
		{"a=1", ""},
	} {
		f.Add(seed.h, seed.n)
	}
	f.Fuzz(func(t *testing.T, h, name string) {
		out, removed := StripCookie(h, name)
		_, present := cookieValue(h, name)
		if name == "" {
			present = false
		}
		if removed != present {
			t.Fatalf("StripCookie(%q, %q) removed = %v; cookie present = %v", h, name, removed, present)
		}
		if !removed {
			if out != h {
				t.Fatalf("StripCookie(%q, %q) changed the header without removing: %q", h, name, out)
			}
			return
		}
		if _, still := cookieValue(out, name); still {
			t.Fatalf("StripCookie(%q, %q) = %q still holds the cookie", h, name, out)
		}
		wantKept, _ := segments(h, name)
		gotKept, _ := segments(out, name)
		if strings.Join(gotKept, "\x00") != strings.Join(wantKept, "\x00") {
			t.Fatalf("StripCookie(%q, %q) = %q kept %q; want %q", h, name, out, gotKept, wantKept)
		}
		// Every kept segment survives byte for byte inside out.
		for _, seg := range strings.Split(h, ";") {
			if n, _, ok := splitPair(seg); (!ok || n != name) && trimOWS(seg) != "" &&
				!strings.Contains(out, strings.TrimLeft(seg, " \t")) {
				t.Fatalf("StripCookie(%q, %q) = %q lost segment %q", h, name, out, seg)
			}
		}
		if again, r := StripCookie(out, name); r || again != out {
			t.Fatalf("StripCookie not idempotent on %q: %q, %v", out, again, r)
		}
		if len(gotKept) == 0 && out != "" {
			t.Fatalf("StripCookie(%q, %q) = %q; want \"\" when nothing else remains", h, name, out)
		}
	})
}
