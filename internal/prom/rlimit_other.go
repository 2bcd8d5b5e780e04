//go:build !unix

package prom

func maxFDs() (float64, bool) { return 0, false }
