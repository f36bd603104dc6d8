package main

import (
	"flag"
	"slices"
	"testing"
)

func TestParseInterspersed(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		wantPos []string
		wantV   bool
		wantErr bool
	}{
		{"flags after the positional", []string{"dir", "-v"}, []string{"dir"}, true, false},
		{"an ID that starts with a dash is positional", []string{"-knavoGh0EJ9QHhmJPv5Epv9PWLjaeY3YuMCwmC_ZYs", "-v"}, []string{"-knavoGh0EJ9QHhmJPv5Epv9PWLjaeY3YuMCwmC_ZYs"}, true, false},
		{"a short unknown flag is still an error", []string{"-x", "dir"}, nil, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			fs.SetOutput(discard{})
			v := fs.Bool("v", false, "")
			pos, err := parseInterspersed(fs, tt.args)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseInterspersed(%q) error = %v; want error %v", tt.args, err, tt.wantErr)
			}
			if err == nil && (!slices.Equal(pos, tt.wantPos) || *v != tt.wantV) {
				t.Errorf("parseInterspersed(%q) = %q, v=%v; want %q, v=%v", tt.args, pos, *v, tt.wantPos, tt.wantV)
			}
		})
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
