package repo

import (
	"bytes"
	"fmt"
	"slices"
	"time"

	"gopkg.in/yaml.v3"
)

// appDefinition is the YAML form of an App (see testdata/apps/shop.yaml).
type appDefinition struct {
	Name    string `yaml:"name"`
	Members []struct {
		VM           string `yaml:"vm"`
		Group        int    `yaml:"group"`
		StartDelay   int    `yaml:"start_delay_s"`
		WaitForGuest bool   `yaml:"wait_for_guest"`
		StartAction  string `yaml:"start_action"`
		StopAction   string `yaml:"stop_action"`
		StopDelay    int    `yaml:"stop_delay_s"`
	} `yaml:"members"`
	Networks  []string `yaml:"networks"`
	Resources struct {
		CPUShares         string `yaml:"cpu_shares"`
		CPUReservationMHz int64  `yaml:"cpu_reservation_mhz"`
		CPULimitMHz       int64  `yaml:"cpu_limit_mhz"`
		MemReservationMB  int64  `yaml:"mem_reservation_mb"`
		MemLimitMB        int64  `yaml:"mem_limit_mb"`
	} `yaml:"resources"`
}

var (
	startActions = map[string]bool{"": true, "powerOn": true, "none": true}
	stopActions  = map[string]bool{"": true, "powerOff": true, "guestShutdown": true, "suspend": true, "none": true}
	shareLevels  = map[string]bool{"": true, "low": true, "normal": true, "high": true}
)

// ParseAppDefinition reads an app definition written in YAML. Unknown keys
// are errors, so a typo does not silently drop a setting.
func ParseAppDefinition(b []byte, now time.Time) (*App, error) {
	var def appDefinition
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&def); err != nil {
		return nil, fmt.Errorf("app definition: %w", err)
	}
	a := &App{Format: ManifestFormat, Name: def.Name, Networks: def.Networks, Updated: now.UTC().Truncate(time.Second),
		Resources: Resources{
			CPUSharesLevel: def.Resources.CPUShares, CPUReservationMHz: def.Resources.CPUReservationMHz,
			CPULimitMHz: def.Resources.CPULimitMHz, MemReservationMB: def.Resources.MemReservationMB,
			MemLimitMB: def.Resources.MemLimitMB,
		}}
	if !shareLevels[a.Resources.CPUSharesLevel] {
		return nil, fmt.Errorf("app definition %q: cpu_shares %q: want low, normal or high", a.Name, a.Resources.CPUSharesLevel)
	}
	for _, m := range def.Members {
		if !startActions[m.StartAction] {
			return nil, fmt.Errorf("app definition %q: member %q: start_action %q: want powerOn or none", a.Name, m.VM, m.StartAction)
		}
		if !stopActions[m.StopAction] {
			return nil, fmt.Errorf("app definition %q: member %q: stop_action %q: want powerOff, guestShutdown, suspend or none", a.Name, m.VM, m.StopAction)
		}
		a.Members = append(a.Members, AppMember{VM: m.VM, Group: m.Group, StartDelay: m.StartDelay,
			WaitForGuest: m.WaitForGuest, StartAction: m.StartAction, StopAction: m.StopAction, StopDelay: m.StopDelay})
	}
	for _, n := range a.Networks {
		if n == "" {
			return nil, fmt.Errorf("app definition %q: empty network name", a.Name)
		}
	}
	if err := a.Validate(); err != nil {
		return nil, fmt.Errorf("app definition: %w", err)
	}
	return a, nil
}

// StartupGroups returns the members grouped by startup group, in start order.
func (a *App) StartupGroups() [][]AppMember {
	byGroup := map[int][]AppMember{}
	var order []int
	for _, m := range a.Members {
		if _, ok := byGroup[m.Group]; !ok {
			order = append(order, m.Group)
		}
		byGroup[m.Group] = append(byGroup[m.Group], m)
	}
	slices.Sort(order)
	out := make([][]AppMember, 0, len(order))
	for _, g := range order {
		out = append(out, byGroup[g])
	}
	return out
}
