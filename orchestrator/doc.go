// Package orchestrator turns a restore request into running VMs: it plans
// (which restore points, which hosts, which order, which networks) without
// calling any hypervisor, then carries the plan out as a session of
// persisted, idempotent steps over a Driver: expose the backup as an NFS
// datastore, register the VMs, assemble the vApp, boot in startup order,
// migrate to production storage, clean up. A crashed orchestrator resumes a
// session; stop undoes it.
package orchestrator
