// Command install-vng installs the pinned virtme-ng .deb (Debian trixie's,
// pure Python, runs on Debian 12) if it is not installed yet: downloaded
// through the private apt configuration, sha256-checked, then installed
// with the system's apt so its dependencies come from the system's sources.
// `make deps` runs it.
package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"github.com/xdplab/xdplab/kernels"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "install-vng:", err)
		os.Exit(1)
	}
}

func run() error {
	want, err := kernels.ToolVersion("virtme-ng")
	if err != nil {
		return err
	}
	out, _ := exec.Command("dpkg-query", "-W", "-f=${Status} ${Version}", "virtme-ng").Output()
	if strings.HasPrefix(string(out), "install ok installed ") && strings.HasSuffix(string(out), " "+want) {
		fmt.Printf("deps: virtme-ng %s present\n", want)
		return nil
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("virtme-ng %s is missing and installing it needs root: run 'sudo make deps'", want)
	}
	dir, err := os.MkdirTemp("", "xdplab-vng-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	deb, err := kernels.FetchTool(context.Background(), "virtme-ng", dir, nil)
	if err != nil {
		return err
	}
	fmt.Printf("installing virtme-ng %s (sha256 verified)\n", want)
	install := func() error {
		c := exec.Command("apt-get", "install", "-y", "-q", "--no-install-recommends", "--allow-downgrades", deb)
		c.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		c.Stdout, c.Stderr = os.Stdout, os.Stderr
		return c.Run()
	}
	if err := install(); err != nil {
		// Its dependencies may need fresh system package lists.
		u := exec.Command("apt-get", "update", "-qq")
		u.Stdout, u.Stderr = os.Stdout, os.Stderr
		if u.Run() != nil {
			return err
		}
		return install()
	}
	return nil
}
