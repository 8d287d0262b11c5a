// Package qemu is the orchestrator's Driver for QEMU on this machine: it
// boots restored VMs straight from rekindle's NFS export and live-mirrors
// their disks off it, the analog of Storage vMotion.
//
// Vocabulary:
//
//   - host: there is one, "localhost"; QEMU runs under TCG (no KVM needed).
//   - datastore: an NFS export QEMU reaches through its nfs:// block driver
//     (libnfs), which asks the server's portmapper on port 111. "Mounting"
//     records the export; nothing is mounted in the kernel.
//   - disk: a backup's "[datastore] folder/<disk>.vmdk" descriptor. QEMU
//     cannot open a monolithicFlat descriptor over nfs://, so the VM opens
//     the extent, nfs://<server><path>/folder/<disk>-flat.vmdk, as raw.
//   - relocation: the datastore Relocate takes is a local directory; each
//     disk is mirrored (QMP drive-mirror, sync full) to <dir>/<vm>/<disk>.raw
//     while the guest runs, then QEMU switches to the copy.
//   - readiness (Config.Ready): "marker", the guest prints the ready marker
//     (REKINDLE-BOOT-OK by default, --ready-marker) on the serial console,
//     which QEMU writes to a file; "agent", the QEMU guest agent answers
//     guest-sync and guest-ping on the virtio-serial port
//     org.qemu.guest_agent.0 (host end vms/<vm>/qga.sock, there for every
//     VM); "none", nothing is checked and the session says "powered on",
//     never "up". The plan records the readiness per VM (ReadyCheck.Via,
//     Marker): a resume waits as the session was made to.
//   - stop: PowerOff escalates, each step bounded (Config.Stop) and logged:
//     QMP system_powerdown (the guest's own shutdown), QMP quit, SIGTERM,
//     SIGKILL; within a session's stop step each is also one of its events
//     (orchestrator.Note).
//
// Everything the driver knows lives as JSON files under Config.WorkDir,
// written atomically, so a new Driver on the same folder (an orchestrator
// that crashed and resumed) finds the datastores, apps and VMs the old one
// made:
//
//	mounts/<datastore>.json   export server and path
//	apps/<app>.json           the vApp's spec (QEMU has no vApps)
//	vms/<vm>/vm.json          placement, hardware, disks, power-on and ready times
//	vms/<vm>/qemu.pid         written and removed by QEMU itself
//	vms/<vm>/qmp.sock         the QMP monitor
//	vms/<vm>/serial.log       the guest's serial console
//	vms/<vm>/qemu.log         QEMU's own messages (-D), start-up errors included
//
// Each VM is one QEMU process started with -daemonize: it detaches from the
// orchestrator (new session, reparented to init) once its devices are open,
// so VMs outlive the orchestrator, and a start that fails (an export that
// does not open) fails the PowerOn call with QEMU's message. A VM counts as
// running while the pid in its pid file is alive and runs with its QMP
// socket; PowerOn on a running VM starts nothing.
//
// When the export goes away (rekindle restarts or dies), QEMU's nfs://
// driver (libnfs) reconnects by itself, to the same address and NFS port:
// the guest's I/O waits, and carries on with nothing lost once the server is
// back on that port (a server back on another port is never found again).
// Meanwhile QEMU's main thread spins in the reconnect loop and its QMP
// monitor does not answer, so PowerOff falls back to signals. Seen with
// QEMU 7.2 and libnfs 4.0; TestServerRestartUnderGuest checks it.
package qemu
