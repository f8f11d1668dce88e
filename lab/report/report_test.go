package report

import (
	"encoding/xml"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func shard(kernel string, cases ...Case) *Report {
	r := New()
	k := &Kernel{Kernel: kernel, Release: kernel + ".0-1-amd64", Accel: "tcg", Seconds: 100}
	for _, c := range cases {
		c.Kernel = kernel
		k.Cases = append(k.Cases, c)
	}
	r.Kernels = append(r.Kernels, k)
	return r
}

func TestWriteReadMerge(t *testing.T) {
	dirs := []string{t.TempDir(), t.TempDir()}
	a := shard("6.1", Case{Suite: "functional", Case: "TestA", Action: "pass", Seconds: 1})
	// test2json's framing byte and a skip reason travel through.
	b := shard("5.10", Case{Suite: "verifier", Case: "TestB", Action: "skip", Output: "=== RUN TestB\n    x_test.go:9: kernel 5.10 lacks bpf_loop\x16\n"})
	for i, r := range []*Report{a, b} {
		if err := r.Write(dirs[i]); err != nil {
			t.Fatal(err)
		}
	}
	var read []*Report
	for _, d := range dirs {
		r, err := Read(d)
		if err != nil {
			t.Fatal(err)
		}
		read = append(read, r)
	}
	m, err := Merge(read...)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, k := range m.Kernels {
		names = append(names, k.Kernel)
	}
	if !reflect.DeepEqual(names, []string{"5.10", "6.1"}) {
		t.Errorf("merged kernels %v, want [5.10 6.1]", names)
	}
	if f := m.Failures(); len(f) != 0 {
		t.Errorf("failures %v, want none", f)
	}
	if miss := m.Missing([]string{"5.10", "6.1", "7.2"}); !reflect.DeepEqual(miss, []string{"7.2"}) {
		t.Errorf("missing %v, want [7.2]", miss)
	}
	md := m.Markdown()
	for _, want := range []string{"| 5.10 | 5.10.0-1-amd64 | tcg |", "| 6.1 |", "5.10/verifier/TestB: skip: x_test.go:9: kernel 5.10 lacks bpf_loop", "`go test -timeout 30m ./tests -kernels 6.1`"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	if _, err := Merge(read[0], read[0]); err == nil {
		t.Error("merging a kernel twice: no error")
	}
	// The same kernel through the other backend is another run.
	vng := shard("6.1", Case{Suite: "functional", Case: "TestA", Action: "pass"})
	vng.Kernels[0].Backend = "vng"
	m2, err := Merge(read[0], vng)
	if err != nil {
		t.Fatal(err)
	}
	md = m2.Markdown()
	for _, want := range []string{"| 6.1 |", "| 6.1 (vng) |", "`go test -timeout 30m ./tests -kernels 6.1 -backend vng`"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}

func TestFailed(t *testing.T) {
	for _, tc := range []struct {
		k    Kernel
		want string
	}{
		{Kernel{Cases: []Case{{Action: "pass"}, {Action: "skip"}}}, ""},
		{Kernel{Cases: []Case{{Action: "pass"}, {Action: "fail"}}}, "1 failed"},
		{Kernel{}, "no test ran"},
		{Kernel{Error: "guest kernel panic: kernel 6.1\n\tKernel panic - not syncing"}, "guest kernel panic: kernel 6.1"},
	} {
		if got := tc.k.Failed(); got != tc.want {
			t.Errorf("%+v: Failed() = %q, want %q", tc.k, got, tc.want)
		}
	}
}

func TestJUnit(t *testing.T) {
	r := shard("6.12",
		Case{Suite: "functional", Case: "TestA", Action: "pass", Seconds: 1.5},
		Case{Suite: "functional", Case: "TestB", Action: "fail", Output: "    b_test.go:3: got 1, want 2 <&>\x1b[0m\n"},
		Case{Suite: "proxy", Case: "TestC", Action: "skip", Output: "    c_test.go:4: needs 5.15\n"})
	r.Kernels[0].Error = "guest timed out: after 25m0s"
	dir := t.TempDir()
	if err := r.Write(dir); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, JUnitFile))
	if err != nil {
		t.Fatal(err)
	}
	var got junitSuites
	if err := xml.Unmarshal(b, &got); err != nil {
		t.Fatalf("junit.xml does not parse: %v\n%s", err, b)
	}
	if got.Tests != 4 || got.Failures != 2 || got.Skipped != 1 {
		t.Errorf("tests/failures/skipped = %d/%d/%d, want 4/2/1\n%s", got.Tests, got.Failures, got.Skipped, b)
	}
	var suites []string
	for _, s := range got.Suites {
		suites = append(suites, s.Name)
	}
	if !reflect.DeepEqual(suites, []string{"6.12/vm", "6.12/functional", "6.12/proxy"}) {
		t.Errorf("suites %v", suites)
	}
	fn := got.Suites[1]
	if fn.Time != "1.500" || fn.Cases[1].Failure == nil || fn.Cases[1].Failure.Message != "b_test.go:3: got 1, want 2 <&>\uFFFD[0m" {
		t.Errorf("functional suite: %+v, failure %+v", fn, fn.Cases[1].Failure)
	}
}

func TestLimits(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"limits-verifier.json": `[{"name":"stack","value":512,"unit":"bytes","bound":512}]`,
		"limits-kv.json":       `[{"name":"key length","value":2048,"unit":"bytes","at_least":true}]`,
		"verifier-kv.json":     `[{"program":"kv_xdp"}]`, // not a limits file
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ls, err := ReadLimits(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 2 || ls[0].Name != "key length" || ls[1].Name != "stack" || ls[1].Bound != 512 {
		t.Fatalf("ReadLimits = %+v, want key length then stack", ls)
	}
	r := shard("5.10")
	r.Kernels[0].Limits = ls
	r.Kernels = append(r.Kernels, shard("7.2").Kernels[0]) // ran no probes
	md := r.Markdown()
	for _, want := range []string{"Verifier limits", "| limit | 5.10 |\n", "| key length | ≥ 2048 bytes |", "| stack | 512 bytes |"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "limits-bad.json"), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadLimits(dir); err == nil || !strings.Contains(err.Error(), "limits-bad.json") {
		t.Errorf("ReadLimits of a broken file: %v, want an error naming it", err)
	}
}

// TestRoom: the room probes' files (room-*.json, not limits) make a table
// of their own, a row per measure, a column per kernel that measured.
func TestRoom(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"room-netlab.json": `[{"name":"veth head room, GET IPv4","value":216,"unit":"bytes"}]`,
		"room-kv.json":     `[{"name":"largest value answered in XDP, GET IPv4","value":257,"unit":"bytes","note":"its reply grows 272 bytes"}]`,
		"limits-kv.json":   `[{"name":"key length","value":2048,"unit":"bytes"}]`,
		"features-kv.json": `[]`,
		"verifier-kv.json": `[{"program":"kv_xdp"}]`,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rs, err := ReadRoom(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 || rs[0].Value != 257 || rs[1].Value != 216 {
		t.Fatalf("ReadRoom = %+v, want kv's then netlab's", rs)
	}
	r := shard("6.12")
	r.Kernels[0].Room = rs
	r.Kernels = append(r.Kernels, shard("7.2").Kernels[0]) // measured nothing
	md := r.Markdown()
	for _, want := range []string{"XDP reply room on a veth", "| measure | 6.12 |\n", "| largest value answered in XDP, GET IPv4 | 257 bytes |", "| veth head room, GET IPv4 | 216 bytes |"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}

// TestReason: a failure's reason is its first message, a skip's its last
// (what the test logged before t.Skip is not why it skipped).
func TestReason(t *testing.T) {
	out := "=== RUN   TestFeatures\n    verifier_test.go:46: bpf_csum_diff in XDP: yes\n    testutils.go:75: kernel 5.10.0 lacks X (needs 5.11)\n        more detail\n--- SKIP: TestFeatures (0.01s)\n"
	if got := (Case{Action: "skip", Output: out}).reason(); got != "testutils.go:75: kernel 5.10.0 lacks X (needs 5.11)" {
		t.Errorf("skip reason %q", got)
	}
	if got := (Case{Action: "fail", Output: out}).reason(); got != "verifier_test.go:46: bpf_csum_diff in XDP: yes" {
		t.Errorf("failure reason %q", got)
	}
}

// TestThroughputRows: the store's GETs/s beside memcached's and the
// reflector's, medians over rounds, in the summary row and the per-kernel
// table; mixed workloads left out.
func TestThroughputRows(t *testing.T) {
	r := shard("6.1")
	r.Kernels[0].Throughput = []byte(`[
	 {"target":"store","client":"pinned","ops_per_sec":300,"cpu_us_per_req":4,"client_us_per_req":3,"latency":{"p99_us":50},"workload":{"get_ratio":1}},
	 {"target":"reflector","client":"pinned","ops_per_sec":400,"cpu_us_per_req":3,"client_us_per_req":2,"latency":{"p99_us":40},"workload":{"get_ratio":1}},
	 {"target":"memcached","client":"pinned","ops_per_sec":100,"cpu_us_per_req":9,"client_us_per_req":3,"latency":{"p99_us":90},"workload":{"get_ratio":1}},
	 {"target":"store","client":"pinned","ops_per_sec":500,"cpu_us_per_req":2,"client_us_per_req":1,"latency":{"p99_us":30},"workload":{"get_ratio":1}},
	 {"target":"store","client":"pinned","ops_per_sec":400,"cpu_us_per_req":3,"client_us_per_req":2,"latency":{"p99_us":40},"workload":{"get_ratio":1}},
	 {"target":"store","client":"pinned","ops_per_sec":9999,"workload":{"get_ratio":0.9}}
	]`)
	md := r.Markdown()
	for _, want := range []string{
		"| 400 / 100 = 4.00× | 400 / 400 = 1.00× |",
		"| 6.1 | store | pinned | 400 | 40.0 | 3.00 | 2.00 | 4.00× | 1.00× |",
		"| 6.1 | memcached | pinned | 100 | 90.0 | 9.00 | 3.00 | 1.00× | 0.25× |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}
