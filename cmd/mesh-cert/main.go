// Command mesh-cert makes and inspects meshnode certificates, which are Nebula v1 and v2
// certificates: files it writes work with nebula, and nebula-cert's files (1.6 for v1, 1.11
// for v2) work here.
//
// Every subcommand is a plain function over an io.Writer and an injected clock (see env),
// so tests run them in-process; main only wires them to the process.
package main

import (
	"os"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:], &env{stdout: os.Stdout, stderr: os.Stderr, now: time.Now}))
}
