// Command genvm writes synthetic VM folders for tests and benchmarks (see package
// github.com/rekindle/rekindle/testdata/vmgen).
//
//	go run ./testdata/genvm -dir DIR -name web01 -seed 1 \
//	    -disk 64M:mixed:flat -disk 256G:zero:sparse -nic prod-web -nic prod-db=00:50:56:aa:bb:cc
//	go run ./testdata/genvm mutate -folder DIR/web01 -percent 5 -seed 2 [-copy-to DIR2/web01]
//
// A -disk value is SIZE[:FILL[:FORMAT[:NAME]]]; FILL is zero, random or mixed,
// FORMAT is flat, sparse, stream or raw; SIZE takes K, M, G, T suffixes and must be
// a multiple of 512. A disk may instead copy a raw image: -disk SRC=path[:FORMAT[:NAME]].
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/rekindle/rekindle/testdata/vmgen"
)

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func main() {
	if len(os.Args) > 1 && os.Args[1] == "mutate" {
		mutate(os.Args[2:])
		return
	}
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "gen" {
		args = args[1:]
	}
	generate(args)
}

func die(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "genvm: "+format+"\n", a...)
	os.Exit(1)
}

func generate(args []string) {
	fs := flag.NewFlagSet("genvm", flag.ExitOnError)
	var disks, nics multi
	dir := fs.String("dir", ".", "parent directory; the VM folder is DIR/NAME")
	name := fs.String("name", "testvm", "VM name")
	seed := fs.Int64("seed", 1, "seed of all generated content")
	guest := fs.String("guest-os", "", "guestOS (default debian11-64)")
	cpus := fs.Int("cpus", 0, "numvcpus (default 2)")
	mem := fs.Int("memory-mb", 0, "memSize in MB (default 2048)")
	hw := fs.Int("hw", 0, "virtualHW.version (default 19)")
	fw := fs.String("firmware", "", "bios (default) or efi")
	withLog := fs.Bool("log", false, "also write vmware.log")
	maxData := fs.String("max-data", "", "bound on the data bytes of each mixed disk (default 256M)")
	fs.Var(&disks, "disk", "SIZE[:FILL[:FORMAT[:NAME]]] or SRC=path[:FORMAT[:NAME]] (repeatable)")
	fs.Var(&nics, "nic", "NETWORK[=MAC] (repeatable)")
	fs.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: genvm [gen] -dir DIR -name NAME [-seed N] -disk 64M:mixed:flat ... [-nic NET[=MAC]] ...")
		fmt.Fprintln(os.Stderr, "       genvm mutate -folder DIR/NAME -percent P [-seed N] [-copy-to NEWDIR/NAME]")
		fs.PrintDefaults()
	}
	fs.Parse(args)
	if fs.NArg() > 0 {
		fs.Usage()
		os.Exit(2)
	}
	spec := vmgen.Spec{Name: *name, Seed: *seed, GuestOS: *guest, NumCPUs: *cpus, MemoryMB: *mem,
		HWVersion: *hw, Firmware: *fw, WithLog: *withLog}
	var md int64
	if *maxData != "" {
		v, err := vmgen.ParseSize(*maxData)
		if err != nil {
			die("%v", err)
		}
		md = v
	}
	for _, d := range disks {
		parts := strings.Split(d, ":")
		var ds vmgen.DiskSpec
		ds.MaxData = md
		if src, ok := strings.CutPrefix(parts[0], "SRC="); ok {
			ds.Source = src
			parts = append([]string{"", ""}, parts[1:]...)
		} else {
			size, err := vmgen.ParseSize(parts[0])
			if err != nil {
				die("%v", err)
			}
			ds.Size = size
			if len(parts) > 1 {
				ds.Fill = parts[1]
			}
		}
		if len(parts) > 2 {
			ds.Format = parts[2]
		}
		if len(parts) > 3 {
			ds.Name = parts[3]
		}
		if len(parts) > 4 {
			die("bad -disk %q", d)
		}
		spec.Disks = append(spec.Disks, ds)
	}
	for _, n := range nics {
		netw, mac, _ := strings.Cut(n, "=")
		spec.NICs = append(spec.NICs, vmgen.NICSpec{Network: netw, MAC: mac})
	}
	folder, err := vmgen.Generate(*dir, spec)
	if err != nil {
		die("%v", err)
	}
	fmt.Println(folder)
}

func mutate(args []string) {
	fs := flag.NewFlagSet("genvm mutate", flag.ExitOnError)
	folder := fs.String("folder", "", "VM folder to change")
	percent := fs.Float64("percent", 5, "share of 64 KiB blocks to rewrite, in percent")
	seed := fs.Int64("seed", 2, "seed of the positions and the new content")
	copyTo := fs.String("copy-to", "", "copy the folder here first and change the copy")
	verbose := fs.Bool("v", false, "print the changed block indexes")
	fs.Parse(args)
	if *folder == "" || fs.NArg() > 0 {
		fs.Usage()
		os.Exit(2)
	}
	target := *folder
	if *copyTo != "" {
		if err := vmgen.Copy(*folder, *copyTo); err != nil {
			die("%v", err)
		}
		target = *copyTo
	}
	ch, err := vmgen.MutateReport(target, *percent, *seed)
	if err != nil {
		die("%v", err)
	}
	for file, blocks := range ch {
		fmt.Printf("%s: %d blocks changed\n", file, len(blocks))
		if *verbose {
			fmt.Println(blocks)
		}
	}
	fmt.Println(target)
}
