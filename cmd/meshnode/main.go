// Command meshnode runs one host of the mesh: `meshnode -config node.yml`.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "meshnode: the data plane is not available in this build yet")
	os.Exit(1)
}
