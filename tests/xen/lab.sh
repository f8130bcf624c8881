#!/usr/bin/env bash
# tests/xen/lab.sh - the project's own Xen machine for tests: Debian's Xen
# 4.17 hypervisor and a small Debian dom0, booted inside QEMU (TCG), which
# runs one PV guest with `xl create -F` and reports what the guest did.
#
#   tests/xen/lab.sh setup      # once, as root; ~2-3 min; ~700 MB in the cache
#   tests/xen/lab.sh run IMAGE [--mem MiB] [--cmdline STR] [--timeout S]
#                    [--vcpus N] [--disk FILE] [--net] [--dom0-script FILE] [--keep DIR]
#   tests/xen/lab.sh status     # is the cache ready, and what it holds
#
# run:
#   stdout  the guest's console (PV console ring, relayed by xenconsoled), and
#           with --dom0-script the script's output as "dom0: LINE", last
#           "dom0: exit N"; stderr: the lab's own progress lines.
#   --disk  FILE (raw) becomes the guest's xvda through blkback; writes persist.
#   --net   a vif on bridge xenbr0 in dom0; dom0 is 10.0.99.1/24 on it.
#   --dom0-script FILE  runs with sh in dom0 (cwd /tmp; busybox nc, udhcpd,
#           ping, wget and python3 are there), started just before `xl create`
#           and after xenbr0 is up; dom0 waits up to 5 s for it after the guest ends.
#   exit    the guest's shutdown code (0 poweroff, 1 reboot, 2 suspend,
#           3 crash, or any 8-bit code it gave SCHEDOP_shutdown), 124 on
#           timeout, 125 when the lab itself failed (the reason on stderr).
#
# Environment: UNIKERNEL_XEN_CACHE (default ~/.cache/unikernel-xen; never
# inside the repo), UNIKERNEL_XEN_VERBOSE=1 (Xen's and dom0's serial log on
# stderr as it comes), UNIKERNEL_XEN_ACCEL=kvm (only on a host with real
# VT-x/SVM; this project's machines have a software KVM on which Xen cannot
# run, see docs/xen.md), QEMU (the binary, default qemu-system-x86_64).
set -euo pipefail

CACHE=${UNIKERNEL_XEN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/unikernel-xen}
QEMU=${QEMU:-qemu-system-x86_64}
XEN=4.17
SUITE=bookworm
# Bump when setup's output changes: an older cache is then rebuilt.
LAYOUT=2
READY=$CACHE/ready-$LAYOUT

# Modules: what the initramfs needs to reach the root disk, what dom0 needs
# to be a Xen control and back-end domain.
ROOT_MODULES="virtio_pci virtio_blk ext4"
DOM0_MODULES="xen-evtchn xen-privcmd xenfs xen-gntdev xen-gntalloc xen-blkback xen-netback bridge virtio_console"

say() { printf 'xen lab: %s\n' "$*" >&2; }
fail() { printf 'xen lab: error: %s\n' "$*" >&2; exit 125; }

mirror() { # the Debian mirror this machine's apt already uses
    local uri
    uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '
        /^URIs:/ {u = $2}
        /^Suites:/ {for (i = 2; i <= NF; i++) if ($i == "bookworm") {print u; exit}}')
    [ -n "$uri" ] || uri=$(awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    [ -n "$uri" ] || fail "no bookworm mirror in this machine's apt sources"
    printf '%s\n' "$uri"
}

# ------------------------------------------------------------------ setup
setup() {
    [ "$(id -u)" = 0 ] || fail "setup needs root (debootstrap and chroot)"
    command -v "$QEMU" >/dev/null || fail "no $QEMU (QEMU 10 from bookworm-backports; .ci/run installs it)"
    local start=$SECONDS tools=()
    command -v debootstrap >/dev/null || tools+=(debootstrap)
    command -v mke2fs >/dev/null || tools+=(e2fsprogs)
    command -v cpio >/dev/null || tools+=(cpio)
    command -v python3 >/dev/null || tools+=(python3)
    if [ ${#tools[@]} -gt 0 ]; then
        say "installing ${tools[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${tools[@]}" >/dev/null
    fi
    mkdir -p "$CACHE"
    rm -f "$CACHE"/ready-*
    local tree=$CACHE/tree
    if [ ! -e "$CACHE/tree.done" ]; then
        rm -rf "$tree"
        say "debootstrap $SUITE into $tree (the slow part: ~1-2 min)"
        debootstrap --variant=minbase "$SUITE" "$tree" "$(mirror)" >"$CACHE/debootstrap.log" 2>&1 ||
            { tail -5 "$CACHE/debootstrap.log" >&2; fail "debootstrap failed (log: $CACHE/debootstrap.log)"; }
        # No service may start inside the chroot.
        printf '#!/bin/sh\nexit 101\n' >"$tree/usr/sbin/policy-rc.d"
        chmod 755 "$tree/usr/sbin/policy-rc.d"
        mount -t proc none "$tree/proc"
        say "installing Linux, Xen $XEN and its tools in the tree"
        local rc=0
        chroot "$tree" env DEBIAN_FRONTEND=noninteractive sh -c "apt-get update -qq &&
            apt-get install -y -qq --no-install-recommends linux-image-amd64 \
                xen-hypervisor-$XEN-amd64 xen-utils-$XEN iproute2 kmod busybox-static" \
            >"$CACHE/apt.log" 2>&1 || rc=$?
        umount "$tree/proc"
        [ $rc = 0 ] || { tail -5 "$CACHE/apt.log" >&2; fail "apt-get in the tree failed (log: $CACHE/apt.log)"; }
        touch "$CACHE/tree.done"
    fi
    local kver
    kver=$(ls "$tree/lib/modules" | sort -V | tail -1)
    [ -n "$kver" ] || fail "no kernel modules in $tree"

    # Only the modules the lab loads stay (the rest is ~400 MB).
    deps() { chroot "$tree" modprobe -S "$kver" -a --show-depends "$@" | awk '$1 == "insmod" {print $2}'; }
    local mods=$tree/lib/modules/$kver
    if [ ! -e "$mods/.lab-kept" ]; then
        say "keeping only the modules the lab loads"
        local kept
        kept=$(deps $ROOT_MODULES $DOM0_MODULES | sort -u)
        mkdir -p "$CACHE/kept"
        for m in $kept; do install -D "$tree$m" "$CACHE/kept$m"; done
        rm -rf "$mods/kernel"
        cp -a "$CACHE/kept/lib/modules/$kver/kernel" "$mods/"
        rm -rf "$CACHE/kept"
        chroot "$tree" depmod "$kver"
        touch "$mods/.lab-kept"
    fi

    # QEMU's multiboot loader takes the hypervisor uncompressed; dom0's kernel
    # goes in as the bare vmlinux ELF, so TCG does not spend seconds
    # decompressing it.
    zcat "$tree/boot/xen-$XEN-amd64.gz" >"$CACHE/xen"
    python3 - "$tree/boot/vmlinuz-$kver" "$CACHE/vmlinux" <<'PY'
import lzma, sys, zlib
blob = open(sys.argv[1], "rb").read()
def inflate(at):
    if blob.startswith(b"\xfd7zXZ\x00", at):
        return lzma.LZMADecompressor().decompress(blob[at:])
    return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(blob[at:])
for magic in (b"\xfd7zXZ\x00", b"\x1f\x8b\x08"):
    at = blob.find(magic)
    while at >= 0:
        try:
            elf = inflate(at)
        except (lzma.LZMAError, zlib.error, EOFError):
            elf = b""
        if elf[:4] == b"\x7fELF":
            open(sys.argv[2], "wb").write(elf)
            sys.exit(0)
        at = blob.find(magic, at + 1)
sys.exit("no compressed ELF kernel inside " + sys.argv[1])
PY

    mkdir -p "$tree/etc/lab" "$tree/job"
    echo "$DOM0_MODULES" >"$tree/etc/lab/modules"

    say "writing the root disk (ext4 from the tree, no loop device)"
    rm -rf "$tree"/var/cache/apt/archives/*.deb "$tree"/var/lib/apt/lists/* \
        "$tree"/usr/share/doc "$tree"/usr/share/man "$tree"/usr/share/locale
    local kib
    kib=$(du -sk "$tree" | cut -f1)
    rm -f "$CACHE/root.img"
    mke2fs -q -t ext4 -E root_owner=0:0 -d "$tree" "$CACHE/root.img" "$((kib / 1024 * 5 / 4 + 64))M" >/dev/null

    say "writing dom0's initramfs"
    local ird
    ird=$(mktemp -d)
    mkdir -p "$ird"/{bin,dev,proc,sys,root,modules}
    cp "$tree/bin/busybox" "$ird/bin/"
    ln -s busybox "$ird/bin/sh"
    # In load order, each once.
    deps $ROOT_MODULES | awk '!seen[$0]++' | while read -r m; do
        cp "$tree$m" "$ird/modules/"
        echo "${m##*/}" >>"$ird/modules/order"
    done
    install -m 755 /dev/stdin "$ird/init" <<'RAMFS'
#!/bin/sh
# Loads the disk drivers, mounts the virtio disks with serials "root" and
# "job", and hands over to the job's init.
export PATH=/bin
busybox mount -t proc none /proc
busybox mount -t sysfs none /sys
busybox mount -t devtmpfs none /dev
for m in $(busybox cat /modules/order); do busybox insmod "/modules/$m"; done
root= job=
for _ in $(busybox seq 200); do
    for b in /sys/block/vd*; do
        case $(busybox cat "$b/serial" 2>/dev/null) in
            root) root=/dev/${b##*/} ;;
            job) job=/dev/${b##*/} ;;
        esac
    done
    [ -b "$root" ] && [ -b "$job" ] && break
    busybox sleep 0.05
done
busybox mount -t ext4 "$root" /root || { echo "lab initramfs: no root disk"; busybox poweroff -f; }
busybox mount -t ext4 -o ro "$job" /root/job || { echo "lab initramfs: no job disk"; busybox poweroff -f; }
busybox umount /proc
busybox umount /sys
busybox mount --move /dev /root/dev
exec busybox switch_root /root /job/init
RAMFS
    (cd "$ird" && find . | cpio -o -H newc --quiet | gzip -1) >"$CACHE/initrd.gz"
    rm -rf "$ird"

    {
        echo "set up $(date -u +%Y-%m-%dT%H:%M:%SZ) in $((SECONDS - start)) s"
        chroot "$tree" dpkg-query -W -f '${Package} ${Version}\n' \
            "xen-hypervisor-$XEN-amd64" "xen-utils-$XEN" "linux-image-$kver"
        "$QEMU" --version | head -1
    } >"$CACHE/versions"
    touch "$READY"
    say "ready in $((SECONDS - start)) s; cache $CACHE ($(du -sh "$CACHE" | cut -f1))"
}

status() {
    if [ -e "$READY" ]; then
        echo "ready: $CACHE"
        cat "$CACHE/versions"
    else
        echo "not set up: run 'tests/xen/lab.sh setup' as root (cache: $CACHE)"
        return 1
    fi
}

# -------------------------------------------------------------------- run
# dom0's first process; written onto each run's job disk, so a change here
# needs no new setup.
dom0_init() {
    cat <<'INIT'
#!/bin/bash
# PID 1 of the test lab's dom0 (/job/init; the initramfs mounted the job
# disk at /job): brings up xenstored and xenconsoled, runs the guest of the
# job disk with `xl create -F`, reports over virtio-serial.
export PATH=/usr/lib/xen-4.17/bin:/usr/sbin:/usr/bin:/sbin:/bin
exec </dev/null >/dev/console 2>&1
mount -t proc none /proc 2>/dev/null; mount -t sysfs none /sys 2>/dev/null
mkdir -p /dev/pts /dev/shm; mount -t devpts none /dev/pts; mount -t tmpfs none /dev/shm
mount -t tmpfs none /run; mount -t tmpfs none /tmp
# Without udev: the links Xen's hotplug scripts use.
ln -sf /proc/self/fd /dev/fd; ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout; ln -sf /proc/self/fd/2 /dev/stderr
mkdir -p /run/xen /run/xenstored /run/lock /var/lib/xen /var/log/xen/console /job
hostname dom0
modprobe -a $(cat /etc/lab/modules)
port() { # NAME -> the /dev node of the virtio-serial port of that name
    local p
    for p in /sys/class/virtio-ports/*; do
        [ "$(cat "$p/name" 2>/dev/null)" = "$1" ] && { echo "/dev/${p##*/}"; return 0; }
    done
    return 1
}
disk() { # SERIAL -> the /dev node of the virtio disk with that serial
    local b
    for b in /sys/block/vd*; do
        [ "$(cat "$b/serial" 2>/dev/null)" = "$1" ] && { echo "/dev/${b##*/}"; return 0; }
    done
    return 1
}
for _ in $(seq 100); do port lab.events >/dev/null && port lab.dom0 >/dev/null && break; sleep 0.05; done
EVENTS=$(port lab.events) || EVENTS=/dev/null
event() { echo "$*" >"$EVENTS"; echo "lab-init: $*"; }
bye() { sync; busybox poweroff -f; sleep 60; }
event "dom0 up $(cut -d' ' -f1 /proc/uptime)"
mount -t xenfs none /proc/xen || { event "fail cannot mount xenfs"; bye; }
xenstored --pid-file=/run/xenstored.pid || { event "fail xenstored did not start"; bye; }
for _ in $(seq 100); do xenstore-read -s / >/dev/null 2>&1 && break; sleep 0.1; done
xen-init-dom0 >/dev/null || { event "fail xen-init-dom0"; bye; }
xenconsoled --pid-file=/run/xenconsoled.pid --log=guest --log-dir=/var/log/xen/console
. /job/settings
{
    echo 'name = "unikernel"'
    echo 'type = "pv"'
    echo 'kernel = "/job/kernel"'
    echo "cmdline = \"$(cat /job/cmdline)\""
    echo "memory = $MEM"
    echo "vcpus = $VCPUS"
    for e in poweroff reboot crash watchdog soft_reset; do echo "on_$e = \"destroy\""; done
    [ "$NET" = 1 ] && echo "vif = [ 'bridge=xenbr0,mac=00:16:3e:00:00:01' ]"
    if [ "$DISK" = 1 ]; then
        GDISK=$(disk guest) || { event "fail the guest disk is missing"; bye; }
        echo "disk = [ 'format=raw,vdev=xvda,access=rw,backendtype=phy,target=$GDISK' ]"
    fi
} >/run/guest.cfg
if [ "$NET" = 1 ]; then
    ip link set lo up
    ip link add xenbr0 type bridge stp_state 0 forward_delay 0
    ip addr add 10.0.99.1/24 dev xenbr0
    ip link set xenbr0 up
fi
CONSOLE_LOG=/var/log/xen/console/guest-unikernel.log
: >"$CONSOLE_LOG"
CONSOLE=$(port lab.console) || CONSOLE=/dev/null
tail -F -n +1 "$CONSOLE_LOG" >"$CONSOLE" 2>/dev/null &
RELAY=$!
SCRIPT=
if [ -e /job/dom0.sh ]; then
    DOM0OUT=$(port lab.dom0) || DOM0OUT=/dev/null
    ( cd /tmp && sh /job/dom0.sh </dev/null 2>&1; echo "exit $?" ) >"$DOM0OUT" &
    SCRIPT=$!
fi
event "xl create $(cut -d' ' -f1 /proc/uptime)"
rc=0
xl create -F /run/guest.cfg >/run/xl.log 2>&1 || rc=$?
code=$(sed -n 's/.*has shut down, reason code \([0-9][0-9]*\).*/\1/p' /run/xl.log | tail -1)
if [ -n "$SCRIPT" ]; then
    for _ in $(seq 50); do kill -0 "$SCRIPT" 2>/dev/null || break; sleep 0.1; done
fi
sleep 0.5
kill "$RELAY" 2>/dev/null
sed 's/^/xl: /' /run/xl.log
[ -s /var/log/xen/xen-hotplug.log ] && sed 's/^/hotplug: /' /var/log/xen/xen-hotplug.log
if [ -n "$code" ]; then
    event "exit $code $(cut -d' ' -f1 /proc/uptime)"
else
    event "fail xl create failed (status $rc): $(grep -i -m2 error /run/xl.log | tr '\n' ' ')"
fi
bye
INIT
}

run() {
    local image="" mem=64 cmdline="" timeout=300 vcpus=1 disk="" net=0 script="" keep=""
    while [ $# -gt 0 ]; do
        case $1 in
            --mem | --cmdline | --timeout | --vcpus | --disk | --dom0-script | --keep)
                [ $# -ge 2 ] || fail "$1 needs a value"
                case $1 in
                    --mem) mem=$2 ;; --cmdline) cmdline=$2 ;; --timeout) timeout=$2 ;;
                    --vcpus) vcpus=$2 ;; --disk) disk=$2 ;; --dom0-script) script=$2 ;;
                    --keep) keep=$2 ;;
                esac
                shift 2 ;;
            --net) net=1; shift ;;
            -*) fail "unknown option $1 (see the head of $0)" ;;
            *) [ -z "$image" ] || fail "one image only ($image, then $1)"; image=$1; shift ;;
        esac
    done
    [ -n "$image" ] || fail "usage: $0 run IMAGE [--mem MiB] [--cmdline STR] [--timeout S] [--disk FILE] [--net] [--dom0-script FILE]"
    [ -f "$image" ] || fail "no image $image"
    [[ $mem =~ ^[0-9]+$ ]] && [ "$mem" -ge 8 ] || fail "--mem $mem: a whole number of MiB, at least 8"
    [[ $vcpus =~ ^[0-9]+$ ]] && [ "$vcpus" -ge 1 ] || fail "--vcpus $vcpus: a whole number, at least 1"
    [[ $timeout =~ ^[0-9]+$ ]] || fail "--timeout $timeout: whole seconds"
    [ -z "$disk" ] || [ -f "$disk" ] || fail "--disk: no file $disk"
    [ -z "$script" ] || [ -f "$script" ] || fail "--dom0-script: no file $script"
    [ -e "$READY" ] || fail "the lab is not set up: run 'tests/xen/lab.sh setup' as root (cache: $CACHE)"

    local dir start=$SECONDS
    if [ -n "$keep" ]; then dir=$keep; mkdir -p "$dir"; else dir=$(mktemp -d /tmp/unikernel-xen.XXXXXX); fi
    mkdir -p "$dir/job"
    cp "$image" "$dir/job/kernel"
    dom0_init >"$dir/job/init"
    chmod 755 "$dir/job/init"
    # A double quote would end the xl config string.
    printf '%s' "$cmdline" | tr -d '"\n' >"$dir/job/cmdline"
    printf 'MEM=%s\nVCPUS=%s\nNET=%s\nDISK=%s\n' "$mem" "$vcpus" "$net" "$([ -n "$disk" ] && echo 1 || echo 0)" \
        >"$dir/job/settings"
    [ -z "$script" ] || cp "$script" "$dir/job/dom0.sh"
    # (mke2fs says "Creating regular file" on stdout: not the guest's output)
    mke2fs -q -t ext2 -d "$dir/job" "$dir/job.img" "$(($(du -sk "$dir/job" | cut -f1) / 1024 + 8))M" >/dev/null

    local accel=(-accel tcg,thread=multi -cpu max)
    [ "${UNIKERNEL_XEN_ACCEL:-tcg}" = kvm ] && accel=(-accel kvm -cpu host,-arch-capabilities)
    local ram=$((mem + 1024))
    [ $ram -ge 2048 ] || ram=2048
    local guestdisk=()
    [ -z "$disk" ] || guestdisk=(-drive "if=none,id=guest,format=raw,file=$disk" -device "virtio-blk-pci,drive=guest,serial=guest")
    local f
    for f in console events dom0 xen qemu; do : >"$dir/$f.log"; done
    "$QEMU" "${accel[@]}" -smp 2 -m "$ram" -nodefaults -no-user-config -display none -no-reboot -monitor none \
        -kernel "$CACHE/xen" \
        -append "console=com1 com1=115200,8n1 loglvl=all guest_loglvl=all noreboot dom0_mem=512M,max:512M dom0_max_vcpus=1" \
        -initrd "$CACHE/vmlinux console=hvc0 earlyprintk=xen loglevel=6 mitigations=off,$CACHE/initrd.gz" \
        -serial "file:$dir/xen.log" \
        -drive "if=none,id=root,format=raw,snapshot=on,file=$CACHE/root.img" -device virtio-blk-pci,drive=root,serial=root \
        -drive "if=none,id=job,format=raw,readonly=on,file=$dir/job.img" -device virtio-blk-pci,drive=job,serial=job \
        "${guestdisk[@]}" \
        -device virtio-serial-pci \
        -chardev "file,id=console,path=$dir/console.log" -device virtserialport,chardev=console,name=lab.console \
        -chardev "file,id=events,path=$dir/events.log" -device virtserialport,chardev=events,name=lab.events \
        -chardev "file,id=dom0,path=$dir/dom0.log" -device virtserialport,chardev=dom0,name=lab.dom0 \
        >"$dir/qemu.log" 2>&1 &
    local qemu=$! followers=()
    tail -s 0.2 -n +1 -f --pid=$qemu "$dir/console.log" &
    followers+=($!)
    if [ -n "$script" ]; then
        tail -s 0.2 -n +1 -f --pid=$qemu "$dir/dom0.log" | sed -u 's/^/dom0: /' &
        followers+=($!)
    fi
    if [ "${UNIKERNEL_XEN_VERBOSE:-0}" = 1 ]; then
        tail -s 0.2 -n +1 -f --pid=$qemu "$dir/xen.log" >&2 &
        followers+=($!)
    fi
    stop() {
        kill "$qemu" 2>/dev/null || true
        wait "$qemu" 2>/dev/null || true
        local p
        for p in "${followers[@]}"; do wait "$p" 2>/dev/null || true; done
    }
    trap 'stop; exit 130' INT TERM

    local code="" told_up=0 told_create=0 ev
    while [ -z "$code" ]; do
        if [ $told_up = 0 ] && grep -q '^dom0 up' "$dir/events.log"; then
            told_up=1; say "dom0 up after $((SECONDS - start)) s"
        fi
        if [ $told_create = 0 ] && grep -q '^xl create' "$dir/events.log"; then
            told_create=1; say "xl create after $((SECONDS - start)) s"
        fi
        ev=$(grep -a -m1 -E '^(exit|fail) ' "$dir/events.log" || true)
        case $ev in
            exit\ *) code=${ev#exit }; code=${code%% *}
                say "the guest shut down with code $code after $((SECONDS - start)) s" ;;
            fail\ *) say "${ev#fail }"; code=125 ;;
        esac
        [ -n "$code" ] && break
        if ! kill -0 $qemu 2>/dev/null; then
            say "QEMU ended early: $(tail -3 "$dir/qemu.log" | tr '\n' ' ')"; code=125
        elif grep -a -q -E 'Panic on CPU|Kernel panic|Hardware Dom0 crashed' "$dir/xen.log"; then
            say "Xen or dom0 crashed (log: $dir/xen.log)"; code=125
        elif [ $((SECONDS - start)) -ge "$timeout" ]; then
            say "timeout after $timeout s"; code=124
        else
            sleep 0.25
        fi
    done
    # dom0 powers off by itself after an exit event; wait a moment for the
    # last console bytes before stopping QEMU.
    for _ in $(seq 40); do kill -0 $qemu 2>/dev/null || break; sleep 0.1; done
    stop
    trap - INT TERM
    if [ -z "$keep" ]; then
        # The logs stay only when the lab itself failed or timed out.
        case $code in 124 | 125) say "logs kept in $dir" ;; *) rm -rf "$dir" ;; esac
    fi
    return "$code"
}

case ${1:-} in
    setup) shift; setup "$@" ;;
    run) shift; run "$@" ;;
    status) shift; status ;;
    *) sed -n '2,29p' "$0" >&2; exit 2 ;;
esac
