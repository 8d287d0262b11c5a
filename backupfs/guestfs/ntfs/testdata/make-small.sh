#!/bin/sh
# Builds small.ntfs.gz, the seed image of FuzzNTFS: a 2 MiB NTFS volume made
# by mkntfs and filled through ntfs-3g (FUSE, in a private mount namespace):
# a resident and a non-resident file, a sparse file, a compressed folder, a
# folder whose index is a B+ tree, an Interix symlink, a hard link and
# alternate data streams. Run as root from this folder; needs ntfs-3g,
# attr (setfattr) and util-linux.
set -e
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
img=$tmp/small.ntfs
truncate -s 2M "$img"
mkntfs -q -F -f -L fuzz -c 1024 "$img"
mkdir "$tmp/mnt"
unshare -m --propagation private sh -e -c '
ntfs-3g -o no_detach,compression,streams_interface=xattr "$1" "$2" & pid=$!
i=0; until mountpoint -q "$2"; do i=$((i+1)); [ $i -lt 200 ] || { kill $pid; exit 1; }; sleep 0.05; done
cd "$2"
printf "hello\n" > hello.txt
head -c 20000 /dev/zero | tr "\0" "x" > big.txt
truncate -s 300000 sparse.bin && printf end | dd of=sparse.bin bs=1 seek=299997 conv=notrunc status=none
mkdir packed && setfattr -n system.ntfs_attrib_be -v 0x00000810 packed
yes "compressible text" | head -c 30000 > packed/text.txt
mkdir many && for i in $(seq 1 60); do printf "$i" > many/file-with-a-long-name-$i; done
ln -s hello.txt link && ln hello.txt hard
setfattr -n user.Zone.Identifier -v "[ZoneTransfer]" hello.txt
setfattr -n user.big -v "0s$(head -c 3000 /dev/zero | tr "\0" "y" | base64 -w0)" big.txt
cd / && umount "$2"
wait $pid' sh "$img" "$tmp/mnt"
gzip -9n -c "$img" > small.ntfs.gz
