// Package vsphere is the orchestrator's Driver for vCenter, built on govmomi.
//
// Vocabulary:
//
//   - inventory path: an absolute vCenter path such as
//     "/DC0/host/Cluster1/Resources/web-app". A path without a leading "/"
//     is taken relative to the datacenter's host folder ("Cluster1",
//     "Cluster1/Resources/web-app"); Placement.Folder is relative to the
//     datacenter's vm folder.
//   - VMRef: a VM's managed object id ("vm-42"), stable while the VM stays
//     registered.
//   - export datastore: the NFS v3 datastore rekindle's server exports;
//     each host mounts it under the same name, server and path.
//   - reconcile: vCenter registers a VM from its .vmx; Reconcile then makes
//     the hardware match the backup record (CPU, memory, controllers, disks,
//     NICs), editing what is there and adding what is missing. ConfigSpec
//     computes that change without calling vCenter.
//
// Every method is idempotent and returns errors that start with what was
// being done and carry vCenter's own fault text ("register web01 on host
// esx1: ...").
//
// The orchestrator boots a vApp's VMs itself, group by group, so the vApp's
// startup order is recorded (SetStartOrder) for vCenter's own vApp power
// operations but not used to boot.
//
// Tests run against govmomi's in-process simulator, extended by the
// vcsimext subpackage where it lacks a method.
package vsphere
