package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
)

// startProfile writes a CPU profile of the whole process to path, when path
// is set (REKINDLE_CPUPROFILE, for benchmarks: bench/nfs.sh BENCH_PROFILE=1),
// and returns the function that ends it. With REKINDLE_BLOCKPROFILE or
// REKINDLE_MUTEXPROFILE set, it also samples where goroutines wait (on
// channels, conditions and locks: blocking events of 10 µs and more) or
// which locks are contended (one event in 10), written to those files when
// the process ends.
func startProfile(path string) func() {
	var ends []func()
	if path != "" {
		f, err := os.Create(path)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "rekindle: REKINDLE_CPUPROFILE:", err)
		} else {
			ends = append(ends, func() {
				pprof.StopCPUProfile()
				f.Close()
			})
		}
	}
	for _, p := range []struct{ env, name string }{{"REKINDLE_BLOCKPROFILE", "block"}, {"REKINDLE_MUTEXPROFILE", "mutex"}} {
		path := os.Getenv(p.env)
		if path == "" {
			continue
		}
		if p.name == "block" {
			runtime.SetBlockProfileRate(10000)
		} else {
			runtime.SetMutexProfileFraction(10)
		}
		ends = append(ends, func() {
			f, err := os.Create(path)
			if err == nil {
				err = pprof.Lookup(p.name).WriteTo(f, 0)
				if cerr := f.Close(); err == nil {
					err = cerr
				}
			}
			if err != nil {
				fmt.Fprintf(os.Stderr, "rekindle: %s: %v\n", p.env, err)
			}
		})
	}
	return func() {
		for _, end := range ends {
			end()
		}
	}
}
