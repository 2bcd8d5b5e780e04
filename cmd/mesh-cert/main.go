// Command mesh-cert makes and inspects meshnode (Nebula v1) certificates.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "mesh-cert: not available in this build yet")
	os.Exit(1)
}
