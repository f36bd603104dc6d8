package loopback

import "testing"

func TestCheckHostPort(t *testing.T) {
	t.Parallel()
	tests := []struct {
		addr    string
		wantErr bool
	}{
		{"127.0.0.1:0", false},
		{"127.8.9.10:9000", false},
		{"[::1]:9000", false},
		{"localhost:9000", false},
		{"LOCALHOST:1", false},
		{":9000", true},
		{"0.0.0.0:9000", true},
		{"10.0.0.1:9000", true},
		{"192.168.1.5:80", true},
		{"example.com:443", true},
		{"[::]:9000", true},
		{"127.0.0.1", true},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			t.Parallel()
			if err := CheckHostPort(tt.addr); (err != nil) != tt.wantErr {
				t.Errorf("CheckHostPort(%q) = %v; want error %v", tt.addr, err, tt.wantErr)
			}
		})
	}
}

func TestCheckURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		url     string
		wantErr bool
	}{
		{"http://127.0.0.1:9090/metrics", false},
		{"http://localhost:9090/metrics", false},
		{"http://[::1]:9090/metrics", false},
		{"http://10.1.2.3:9090/metrics", true},
		{"http://metrics.internal/metrics", true},
		{"ftp://127.0.0.1/x", true},
		{"127.0.0.1:9090/metrics", true},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			t.Parallel()
			if err := CheckURL(tt.url); (err != nil) != tt.wantErr {
				t.Errorf("CheckURL(%q) = %v; want error %v", tt.url, err, tt.wantErr)
			}
		})
	}
}
