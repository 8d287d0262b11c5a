package backupjob

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/vapi/rest"
	"github.com/vmware/govmomi/vapi/tags"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/rekindle/rekindle/orchestrator/vcbackup"
)

// parseTag splits a job's tag selector "category:tag". Tag names are unique
// only within their category, so both parts are required.
func parseTag(s string) (category, tag string, err error) {
	category, tag, ok := strings.Cut(s, ":")
	category, tag = strings.TrimSpace(category), strings.TrimSpace(tag)
	if !ok || category == "" || tag == "" {
		return "", "", fmt.Errorf("tag %q: want category:tag, e.g. backup:nightly", s)
	}
	return category, tag, nil
}

// restUser is who the job logs in to vCenter's REST API as: the same user
// as its SOAP session.
func (d *Definition) restUser(pw string) *url.Userinfo {
	if d.VCenter.User != "" {
		return url.UserPassword(d.VCenter.User, pw)
	}
	if u, err := soap.ParseURL(d.VCenter.URL); err == nil && u != nil {
		return u.User
	}
	return nil
}

// taggedVMs lists the VMs (templates left out) that carry each of the
// job's tags, and an error for each selector that failed (keyed by it). Tags live in vCenter's REST API (vAPI), not in the SOAP
// inventory, so this logs in there too. A tag or category vCenter does not
// know, and a tag no VM carries, is an error: a job that silently selects
// nothing would look like a success while backing up nothing.
func taggedVMs(ctx context.Context, c *vim25.Client, user *url.Userinfo, selectors []string) ([]vcbackup.Target, map[string]error) {
	if len(selectors) == 0 {
		return nil, nil
	}
	errs := map[string]error{}
	rc := rest.NewClient(c)
	if err := rc.Login(ctx, user); err != nil {
		for _, sel := range selectors {
			errs[sel] = fmt.Errorf("tag %s: log in to the vCenter REST API: %w", sel, err)
		}
		return nil, errs
	}
	defer rc.Logout(context.WithoutCancel(ctx))
	m := tags.NewManager(rc)
	var out []vcbackup.Target
	for _, sel := range selectors {
		vms, err := vmsWithTag(ctx, c, m, sel)
		if err != nil {
			errs[sel] = err
			continue
		}
		for _, vm := range vms {
			if !slices.ContainsFunc(out, func(t vcbackup.Target) bool { return t.Ref == vm.Ref }) {
				out = append(out, vm)
			}
		}
	}
	return out, errs
}

func vmsWithTag(ctx context.Context, c *vim25.Client, m *tags.Manager, sel string) ([]vcbackup.Target, error) {
	catName, tagName, err := parseTag(sel)
	if err != nil {
		return nil, err
	}
	cat, err := m.GetCategory(ctx, catName)
	if err != nil {
		return nil, fmt.Errorf("tag %s: vCenter has no tag category %q (%v)", sel, catName, err)
	}
	tag, err := m.GetTagForCategory(ctx, tagName, cat.ID)
	if err != nil {
		return nil, fmt.Errorf("tag %s: category %q has no tag %q", sel, catName, tagName)
	}
	objs, err := m.ListAttachedObjects(ctx, tag.ID)
	if err != nil {
		return nil, fmt.Errorf("tag %s: list tagged objects: %w", sel, err)
	}
	var refs []types.ManagedObjectReference
	for _, o := range objs {
		if ref := o.Reference(); ref.Type == "VirtualMachine" {
			refs = append(refs, ref)
		}
	}
	if len(refs) == 0 {
		return nil, fmt.Errorf("tag %s: no VM carries it", sel)
	}
	var vms []mo.VirtualMachine
	if err := property.DefaultCollector(c).Retrieve(ctx, refs, []string{"name", "config.template"}, &vms); err != nil {
		return nil, fmt.Errorf("tag %s: %w", sel, err)
	}
	var out []vcbackup.Target
	for _, vm := range vms {
		if vm.Config != nil && vm.Config.Template {
			continue
		}
		out = append(out, vcbackup.Target{Name: vm.Name, Ref: vm.Self})
	}
	slices.SortFunc(out, func(a, b vcbackup.Target) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}
