#!/usr/bin/env bash
# asterisk-setup.sh — switchctl's own real Asterisk for development and tests.
#
# Asterisk 22 comes from Debian sid; the host is Debian 12 (bookworm), so Asterisk lives in a
# debootstrapped sid chroot and listens on 127.0.0.1 only (ARI/HTTP 8088, PJSIP/UDP 5060,
# RTP 10000-10999). sipp (Debian package sip-tester) is installed on the host to place test calls.
#
# Commands:
#   setup         build (or reuse) the chroot, install Asterisk in it and sipp on the host,
#                 install the default loopback config unless a rendered one was installed
#   start         start Asterisk (PID file), wait until ARI answers
#   stop          stop the Asterisk named by the PID file
#   restart       stop + start
#   status        say whether Asterisk runs and ARI answers (exit 0 yes, 1 no)
#   config [DIR]  install the default config, then DIR/*.conf over it, into the chroot's
#                 /etc/asterisk (no DIR: the default config only); restart to apply
#   cli CMD...    run an Asterisk CLI command in the running Asterisk
#
# Exit codes: 0 ok; 1 failure; 2 usage; 3 environment failure: the Debian archive is unreachable.
#
# Environment (all optional):
#   SWITCHCTL_ASTERISK_ROOT   base directory (default /var/lib/switchctl/asterisk); the chroot is
#                             <base>/root, PID file and logs are in <base>/run
#   SWITCHCTL_DEBIAN_MIRROR   Debian archive (default: the first Debian URI of the host's apt sources)
#   SWITCHCTL_ARI_PORT (8088) SWITCHCTL_SIP_PORT (5060) SWITCHCTL_SIPP_PORT (5080)
#   SWITCHCTL_ARI_USER (switchctl) SWITCHCTL_ARI_PASSWORD (switchctl) SWITCHCTL_STASIS_APP (switchctl)
#   SWITCHCTL_ASTERISK_START_TIMEOUT  seconds `start` waits for ARI (default 30)
set -euo pipefail

BASE_ASKED="${SWITCHCTL_ASTERISK_ROOT:-/var/lib/switchctl/asterisk}"
BASE="${BASE_ASKED%/}"
ROOT="$BASE/root"
RUNDIR="$BASE/run"
PIDFILE="$RUNDIR/asterisk.pid"
CONFIG_SOURCE="$RUNDIR/config-source"   # "default" or the absolute DIR given to `config`
SUITE=sid
ARI_PORT="${SWITCHCTL_ARI_PORT:-8088}"
SIP_PORT="${SWITCHCTL_SIP_PORT:-5060}"
SIPP_PORT="${SWITCHCTL_SIPP_PORT:-5080}"
ARI_USER="${SWITCHCTL_ARI_USER:-switchctl}"
ARI_PASSWORD="${SWITCHCTL_ARI_PASSWORD:-switchctl}"
STASIS_APP="${SWITCHCTL_STASIS_APP:-switchctl}"
START_TIMEOUT="${SWITCHCTL_ASTERISK_START_TIMEOUT:-30}"
ETC=/etc/asterisk                 # config dir inside the chroot
STOCK_ETC=/etc/asterisk.dist      # the package's own config, kept aside once
MODDIR=/usr/lib/x86_64-linux-gnu/asterisk/modules
# Packages installed in the chroot. `asterisk` carries every module we load (res_ari*, res_stasis*,
# res_websocket_client, res_pjsip*, chan_pjsip, app_stasis, codec_resample, cdr_csv, func_timeout).
CHROOT_PACKAGES=(asterisk)
export DEBIAN_FRONTEND=noninteractive
APT_OPTS=(-o DPkg::Lock::Timeout=300 -o Acquire::Retries=2 -o Acquire::http::Timeout=20)

EXIT_FAIL=1 EXIT_USAGE=2 EXIT_ARCHIVE=3

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
T0=$(now_ms)
log()  { printf 'asterisk-setup: %s\n' "$*" >&2; }
die()  { printf 'asterisk-setup: ERROR: %s\n' "$1" >&2; exit "${2:-$EXIT_FAIL}"; }
archive_unreachable() {  # $1 archive URL, $2 what failed
    die "Debian archive $1 (suite $SUITE) is unreachable: $2; set SWITCHCTL_DEBIAN_MIRROR to a reachable mirror" "$EXIT_ARCHIVE"
}
elapsed() { echo "$(( $(now_ms) - T0 )) ms"; }

require_root() { [ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot and mount need it)"; }

check_base() {
    # the chroot is removed with rm -rf when a build was interrupted: refuse anything that could be
    # a system directory
    case "$BASE" in
        ""|/|/bin*|/boot*|/dev*|/etc*|/home|/lib*|/proc*|/root|/run|/sbin*|/sys*|/tmp|/usr*|/var|/var/lib|/var/cache)
            die "refusing SWITCHCTL_ASTERISK_ROOT=$BASE_ASKED (must be a dedicated directory)" "$EXIT_USAGE";;
    esac
}

# ------------------------------------------------------------------------------------------ archive
detect_mirror() {
    # first non-security Debian URI in the host's apt sources (deb822 first, then one-line format)
    local m
    m=$(awk '/^URIs:/{for(i=2;i<=NF;i++)print $i}' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | grep -i debian | grep -vi security | head -n1 || true)
    if [ -z "$m" ]; then
        m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
            | sed -E 's/\[[^]]*\]//' | awk '$1=="deb"{print $2}' \
            | grep -i debian | grep -vi security | head -n1 || true)
    fi
    echo "${m%/}"
}

probe_archive() {
    # one bounded HTTP request for the suite's InRelease: tells "archive unreachable" apart from
    # a later debootstrap/apt failure, before we spend minutes on it
    local url="$1/dists/$SUITE/InRelease" err
    if command -v curl >/dev/null; then
        err=$(curl -fsS -o /dev/null --connect-timeout 10 --max-time 30 "$url" 2>&1) \
            || archive_unreachable "$1" "GET $url failed: ${err#curl: }"
    else
        err=$(wget -q -O /dev/null --timeout=15 --tries=1 "$url" 2>&1) \
            || archive_unreachable "$1" "GET $url failed${err:+: $err}"
    fi
}

# ------------------------------------------------------------------------------------------ mounts
mounted() { mountpoint -q "$1"; }
mount_proc() { mounted "$ROOT/proc" || mount -t proc proc "$ROOT/proc"; }
umount_proc() { if mounted "$ROOT/proc"; then umount "$ROOT/proc" || umount -l "$ROOT/proc"; fi; }

# ------------------------------------------------------------------------------------------ process
running_pid() {
    # the PID from the PID file if that process is an Asterisk whose root is our chroot
    local pid
    [ -s "$PIDFILE" ] || return 1
    pid=$(cat "$PIDFILE")
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = asterisk ] || return 1
    [ "$(readlink "/proc/$pid/root" 2>/dev/null)" = "$(readlink -f "$ROOT")" ] || return 1
    echo "$pid"
}

ari_ok() (
    # GET /ari/asterisk/info with plain bash (no curl dependency at start time); 200 = ARI is up
    local auth line
    auth=$(printf '%s:%s' "$ARI_USER" "$ARI_PASSWORD" | base64 -w0)
    exec 3<>"/dev/tcp/127.0.0.1/$ARI_PORT" || exit 1
    printf 'GET /ari/asterisk/info HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Basic %s\r\n\r\n' "$auth" >&3
    IFS= read -r -t 2 line <&3 || exit 1
    [[ "$line" == "HTTP/1."?" 200"* ]]
) 2>/dev/null

# ------------------------------------------------------------------------------------------ config
write_default_config() {  # $1 = directory to write the default loopback config into
    local c="$1"
    cat > "$c/asterisk.conf" <<EOF
; switchctl default (tools/asterisk-setup.sh): loopback only
[directories]
astcachedir => /var/cache/asterisk
astetcdir => $ETC
astmoddir => $MODDIR
astvarlibdir => /var/lib/asterisk
astdbdir => /var/lib/asterisk
astkeydir => /var/lib/asterisk
astdatadir => /usr/share/asterisk
astagidir => /usr/share/asterisk/agi-bin
astspooldir => /var/spool/asterisk
astrundir => /var/run/asterisk
astlogdir => /var/log/asterisk
astsbindir => /usr/sbin

[options]
runuser = asterisk
rungroup = asterisk
documentation_language = en_US
EOF
    # autoload = no: only what switchctl needs is loaded, so nothing binds or dials beyond loopback
    {
        echo '; switchctl default (tools/asterisk-setup.sh): explicit module list'
        echo '[modules]'
        echo 'autoload = no'
        local m
        for m in \
            res_sorcery_config res_sorcery_memory res_sorcery_astdb res_timing_timerfd \
            res_pjproject res_pjsip res_pjsip_session res_pjsip_pubsub res_pjsip_authenticator_digest \
            chan_pjsip res_pjsip_endpoint_identifier_ip res_pjsip_sdp_rtp res_pjsip_caller_id \
            res_pjsip_dtmf_info res_pjsip_rfc3326 res_pjsip_refer res_pjsip_logger res_rtp_asterisk \
            pbx_config app_stasis app_playback app_echo app_dial app_stack \
            func_callerid func_channel func_timeout func_hangupcause func_strings func_cdr \
            bridge_simple bridge_native_rtp bridge_softmix bridge_holding bridge_builtin_features \
            chan_bridge_media codec_ulaw codec_alaw codec_a_mu codec_gsm codec_resample \
            format_gsm format_wav format_wav_gsm format_pcm format_sln \
            cdr_csv \
            res_http_websocket res_websocket_client \
            res_stasis res_stasis_answer res_stasis_playback res_stasis_recording res_stasis_snoop \
            res_stasis_device_state \
            res_ari res_ari_model res_ari_applications res_ari_asterisk res_ari_bridges \
            res_ari_channels res_ari_device_states res_ari_endpoints res_ari_events \
            res_ari_playbacks res_ari_recordings res_ari_sounds
        do echo "load => $m.so"; done
    } > "$c/modules.conf"
    cat > "$c/http.conf" <<EOF
[general]
enabled = yes
bindaddr = 127.0.0.1
bindport = $ARI_PORT
tlsenable = no
EOF
    cat > "$c/ari.conf" <<EOF
[general]
enabled = yes
pretty = no
allowed_origins = http://127.0.0.1:$ARI_PORT

[$ARI_USER]
type = user
read_only = no
password = $ARI_PASSWORD
password_format = plain
EOF
    cat > "$c/pjsip.conf" <<EOF
[global]
type = global
user_agent = switchctl-asterisk
endpoint_identifier_order = ip

[transport-udp]
type = transport
protocol = udp
bind = 127.0.0.1:$SIP_PORT

; every SIP request from 127.0.0.1 is endpoint 'sipp' (no auth: loopback only)
[sipp]
type = endpoint
transport = transport-udp
context = from-loopback
disallow = all
allow = ulaw,alaw
dtmf_mode = rfc4733
direct_media = no
rtp_symmetric = yes
media_address = 127.0.0.1
bind_rtp_to_media_address = yes
aors = sipp

; calls Asterisk places to endpoint 'sipp' go to the sipp UAS here
[sipp]
type = aor
contact = sip:sipp@127.0.0.1:$SIPP_PORT

[sipp-identify]
type = identify
endpoint = sipp
match = 127.0.0.1
EOF
    cat > "$c/extensions.conf" <<EOF
[general]
static = yes
writeprotect = yes

[from-loopback]
; every number called from 127.0.0.1 enters the ARI application '$STASIS_APP'
exten => _X.,1,Stasis($STASIS_APP,inbound,\${EXTEN})
 same => n,Hangup()
exten => _[a-z].,1,Stasis($STASIS_APP,inbound,\${EXTEN})
 same => n,Hangup()

[stasis-local]
; POST /ari/channels?endpoint=Local/<n>@stasis-local: the ;2 half enters '$STASIS_APP' too
exten => _X.,1,Answer()
 same => n,Stasis($STASIS_APP,local,\${EXTEN})
 same => n,Hangup()

[echo]
exten => _X.,1,Answer()
 same => n,Echo()
EOF
    cat > "$c/rtp.conf" <<'EOF'
[general]
rtpstart = 10000
rtpend = 10999
icesupport = no
EOF
    cat > "$c/logger.conf" <<'EOF'
[general]
[logfiles]
console => notice,warning,error
messages.log => notice,warning,error,verbose(3)
EOF
    # CDRs as CSV in /var/log/asterisk/cdr-csv/Master.csv (written at once, unanswered calls too)
    cat > "$c/cdr.conf" <<'EOF'
[general]
enable = yes
unanswered = yes
congestion = yes
batch = no

[csv]
usegmtime = no
loguniqueid = yes
loguserfield = yes
accountlogs = no
newcdrcolumns = yes
EOF
    printf '[general]\nenabled = no\n' > "$c/manager.conf"
    printf '[general]\nenable = no\n' > "$c/cel.conf"
    printf '[startup]\n\n[log_mappings]\ntype = log_mappings\n' > "$c/pjproject.conf"
    printf '; no outbound websocket connections\n' > "$c/websocket_client.conf"
    printf '; none\n' > "$c/acl.conf"
    local f
    for f in features udptl ccss; do printf '[general]\n' > "$c/$f.conf"; done
}

install_config() {  # $1 = "" (default only) or a directory of rendered *.conf files
    local src="${1:-}" staged="$ROOT$ETC.new"
    [ -d "$ROOT$STOCK_ETC" ] || die "no Asterisk in $ROOT; run '$0 setup' first"
    if [ -n "$src" ]; then
        [ -d "$src" ] || die "config: $src is not a directory" "$EXIT_USAGE"
        src=$(cd "$src" && pwd)
        compgen -G "$src/*.conf" >/dev/null || die "config: no *.conf files in $src" "$EXIT_USAGE"
    fi
    # build the new set beside the live one, then swap: a failed copy never leaves half a config
    rm -rf "$staged"; mkdir -p "$staged"
    install -m 644 "$ROOT$STOCK_ETC/indications.conf" "$staged/indications.conf"
    write_default_config "$staged"
    if [ -n "$src" ]; then cp -L "$src"/*.conf "$staged/"; fi
    chmod 644 "$staged"/*.conf
    rm -rf "$ROOT$ETC.old"
    [ -d "$ROOT$ETC" ] && mv "$ROOT$ETC" "$ROOT$ETC.old"
    mv "$staged" "$ROOT$ETC"
    rm -rf "$ROOT$ETC.old"
    mkdir -p "$RUNDIR"
    echo "${src:-default}" > "$CONFIG_SOURCE"
    log "config: installed ${src:-the default loopback config} into $ROOT$ETC"
    if running_pid >/dev/null; then log "config: Asterisk is running; '$0 restart' applies it"; fi
}

# ------------------------------------------------------------------------------------------ setup
host_packages() {
    local need=()
    command -v debootstrap >/dev/null || need+=(debootstrap)
    command -v sipp >/dev/null || need+=(sip-tester)
    [ ${#need[@]} -eq 0 ] && return 0
    log "host: apt-get install ${need[*]}"
    apt-get "${APT_OPTS[@]}" update -qq >"$RUNDIR/apt-host.log" 2>&1 \
        || archive_unreachable "$(detect_mirror)" "host apt-get update failed (log: $RUNDIR/apt-host.log)"
    grep -q '^[WE]: Failed to fetch' "$RUNDIR/apt-host.log" \
        && archive_unreachable "$(detect_mirror)" "host apt-get update could not fetch (log: $RUNDIR/apt-host.log)"
    apt-get "${APT_OPTS[@]}" install -y -qq --no-install-recommends "${need[@]}" >>"$RUNDIR/apt-host.log" 2>&1 \
        || die "host: apt-get install ${need[*]} failed (log: $RUNDIR/apt-host.log)"
    log "host: installed ${need[*]} ($(elapsed))"
}

bootstrap_chroot() {  # $1 mirror
    [ -e "$ROOT/.switchctl-debootstrap-ok" ] && return 0
    if [ -e "$ROOT" ]; then
        log "removing the incomplete chroot $ROOT"
        umount_proc
        rm -rf --one-file-system "$ROOT"
    fi
    mkdir -p "$BASE"
    log "debootstrap --variant=minbase $SUITE $ROOT $1 (the slow part)"
    if ! debootstrap --variant=minbase "$SUITE" "$ROOT" "$1" >"$RUNDIR/debootstrap.log" 2>&1; then
        tail -n 15 "$RUNDIR/debootstrap.log" >&2
        if grep -qiE "Failed getting release file|Couldn't download|couldn't download|Temporary failure resolving|Could not resolve" "$RUNDIR/debootstrap.log"; then
            archive_unreachable "$1" "debootstrap could not download (log: $RUNDIR/debootstrap.log)"
        fi
        die "debootstrap failed (log: $RUNDIR/debootstrap.log)"
    fi
    touch "$ROOT/.switchctl-debootstrap-ok"
    log "debootstrap done ($(elapsed))"
}

chroot_basics() {  # $1 mirror; cheap, rewritten on every setup
    printf '127.0.0.1\tlocalhost %s\n::1\tlocalhost ip6-localhost ip6-loopback %s\n' \
        "$(hostname)" "$(hostname)" > "$ROOT/etc/hosts"
    # package scripts must not start daemons in the chroot
    printf '#!/bin/sh\nexit 101\n' > "$ROOT/usr/sbin/policy-rc.d"; chmod 755 "$ROOT/usr/sbin/policy-rc.d"
    # a frozen/snapshot mirror may serve an expired sid Release; the packages are still signed
    printf 'Acquire::Check-Valid-Until "false";\n' > "$ROOT/etc/apt/apt.conf.d/99switchctl-valid-until"
    printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
        > "$ROOT/etc/apt/apt.conf.d/99switchctl-no-recommends"
    printf 'deb %s %s main\n' "$1" "$SUITE" > "$ROOT/etc/apt/sources.list"
}

chroot_packages() {  # $1 mirror
    local missing=() p
    for p in "${CHROOT_PACKAGES[@]}"; do
        chroot "$ROOT" dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
    mount_proc
    log "chroot: apt-get install ${missing[*]}"
    if ! chroot "$ROOT" apt-get "${APT_OPTS[@]}" update -qq >"$RUNDIR/apt-chroot.log" 2>&1 \
        || grep -q '^[WE]: Failed to fetch' "$RUNDIR/apt-chroot.log"; then
        umount_proc
        archive_unreachable "$1" "apt-get update in the chroot failed (log: $RUNDIR/apt-chroot.log)"
    fi
    if ! chroot "$ROOT" apt-get "${APT_OPTS[@]}" install -y -qq --no-install-recommends "${missing[@]}" \
        >>"$RUNDIR/apt-chroot.log" 2>&1; then
        umount_proc
        tail -n 15 "$RUNDIR/apt-chroot.log" >&2
        grep -qiE 'Failed to fetch|Could not resolve|Temporary failure' "$RUNDIR/apt-chroot.log" \
            && archive_unreachable "$1" "apt-get install in the chroot could not download (log: $RUNDIR/apt-chroot.log)"
        die "apt-get install ${missing[*]} in the chroot failed (log: $RUNDIR/apt-chroot.log)"
    fi
    chroot "$ROOT" apt-get clean
    umount_proc
    log "chroot: installed ${missing[*]} ($(elapsed))"
}

chroot_dirs() {
    # keep the package's own config aside once: `config` builds /etc/asterisk from scratch
    if [ ! -d "$ROOT$STOCK_ETC" ]; then cp -a "$ROOT$ETC" "$ROOT$STOCK_ETC"; fi
    # ARI recordings go to <spool>/recording; the Debian package does not create it and ARI then
    # answers 500 to POST /channels/{id}/record (seen in the captures)
    mkdir -p "$ROOT/var/spool/asterisk/recording" "$ROOT/var/log/asterisk/cdr-csv" "$ROOT/run/asterisk"
    chroot "$ROOT" chown -R asterisk:asterisk /var/lib/asterisk /var/spool/asterisk /var/log/asterisk \
        /var/cache/asterisk /run/asterisk
}

cmd_setup() {
    require_root; check_base
    mkdir -p "$RUNDIR"
    [ "$(dpkg --print-architecture)" = amd64 ] || die "only amd64 hosts are supported (module path $MODDIR)"
    local mirror="${SWITCHCTL_DEBIAN_MIRROR:-$(detect_mirror)}"
    mirror="${mirror%/}"
    [ -n "$mirror" ] || die "no Debian archive in the host's apt sources; set SWITCHCTL_DEBIAN_MIRROR" "$EXIT_ARCHIVE"
    local need_archive=0
    [ -e "$ROOT/.switchctl-debootstrap-ok" ] || need_archive=1
    if [ $need_archive = 0 ] && ! chroot "$ROOT" dpkg-query -W -f='${Status}' asterisk 2>/dev/null | grep -q 'install ok installed'; then
        need_archive=1
    fi
    [ $need_archive = 1 ] && probe_archive "$mirror"
    host_packages
    bootstrap_chroot "$mirror"
    chroot_basics "$mirror"
    chroot_packages "$mirror"
    chroot_dirs
    # a config installed with `config DIR` survives a second setup; the default is refreshed
    local current=""
    [ -s "$CONFIG_SOURCE" ] && current=$(cat "$CONFIG_SOURCE")
    if [ -z "$current" ] || [ "$current" = default ] || [ ! -d "$ROOT$ETC" ]; then
        install_config ""
    else
        log "keeping the config installed from $current (run '$0 config' for the default)"
    fi
    local version
    version=$(chroot "$ROOT" dpkg-query -W -f='${Version}' asterisk)
    log "ready: asterisk $version in $ROOT; ARI http://127.0.0.1:$ARI_PORT/ari (user $ARI_USER, app $STASIS_APP), SIP udp 127.0.0.1:$SIP_PORT; setup took $(elapsed)"
}

# ------------------------------------------------------------------------------------------ start/stop
cmd_start() {
    require_root; check_base
    [ -x "$ROOT/usr/sbin/asterisk" ] && [ -d "$ROOT$ETC" ] || die "Asterisk is not set up in $ROOT; run '$0 setup' first"
    mkdir -p "$RUNDIR"
    local pid
    if pid=$(running_pid); then
        if ari_ok; then log "already running, pid $pid"; return 0; fi
        die "Asterisk pid $pid runs but ARI on 127.0.0.1:$ARI_PORT does not answer; '$0 stop' then start"
    fi
    rm -f "$PIDFILE"
    if ari_ok; then die "port 127.0.0.1:$ARI_PORT already answers ARI, but not for our PID file: another Asterisk?"; fi
    mount_proc
    # Asterisk needs no DNS: the host name resolves in /etc/hosts and there is no nameserver at
    # all, so nothing it does can send a query off the machine
    printf '127.0.0.1\tlocalhost %s\n::1\tlocalhost ip6-localhost ip6-loopback %s\n' \
        "$(hostname)" "$(hostname)" > "$ROOT/etc/hosts"
    printf '# switchctl: no DNS inside the Asterisk chroot (setup copies the host file in for apt)\n' \
        > "$ROOT/etc/resolv.conf"
    chroot "$ROOT" sh -c 'mkdir -p /run/asterisk && chown asterisk:asterisk /run/asterisk'
    local log_file="$RUNDIR/asterisk.stdout.log"
    : > "$log_file"
    # -f: stay in the foreground so $! is Asterisk itself; setsid: own session, no terminal
    setsid chroot "$ROOT" /usr/sbin/asterisk -C "$ETC/asterisk.conf" -f -n -U asterisk -G asterisk \
        </dev/null >>"$log_file" 2>&1 &
    pid=$!
    echo "$pid" > "$PIDFILE"
    local deadline=$(( $(now_ms) + START_TIMEOUT * 1000 ))
    while [ "$(now_ms)" -lt $deadline ]; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$PIDFILE"; umount_proc
            tail -n 20 "$log_file" >&2
            die "Asterisk exited at start; see $log_file and $ROOT/var/log/asterisk/messages.log"
        fi
        if ari_ok; then
            log "started, pid $pid; ARI answered after $(elapsed)"
            return 0
        fi
        sleep 0.1
    done
    tail -n 20 "$log_file" >&2
    die "ARI did not answer on 127.0.0.1:$ARI_PORT within ${START_TIMEOUT}s (Asterisk pid $pid left running; '$0 stop')"
}

cmd_stop() {
    require_root; check_base
    local pid
    if pid=$(running_pid); then
        kill -TERM "$pid"
        local i
        for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            log "pid $pid ignored SIGTERM for 10 s; SIGKILL"
            kill -KILL "$pid"
            for i in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        fi
        log "stopped pid $pid ($(elapsed))"
    elif [ -s "$PIDFILE" ]; then
        log "stale PID file ($(cat "$PIDFILE") is not our Asterisk); removed"
    else
        log "not running"
    fi
    rm -f "$PIDFILE"
    [ -d "$ROOT/proc" ] && umount_proc
    return 0
}

cmd_status() {
    local pid
    if pid=$(running_pid); then
        if ari_ok; then echo "running: pid $pid, ARI http://127.0.0.1:$ARI_PORT/ari answers"; return 0; fi
        echo "running: pid $pid, but ARI on 127.0.0.1:$ARI_PORT does not answer"; return 1
    fi
    if [ -x "$ROOT/usr/sbin/asterisk" ]; then echo "stopped (set up in $ROOT)"; else echo "not set up ($ROOT)"; fi
    return 1
}

cmd_cli() {
    require_root
    [ $# -gt 0 ] || die "usage: $0 cli COMMAND..." "$EXIT_USAGE"
    running_pid >/dev/null || die "Asterisk is not running"
    exec chroot "$ROOT" /usr/sbin/asterisk -C "$ETC/asterisk.conf" -rx "$*"
}

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit "$EXIT_USAGE"
}

main() {
    local cmd="${1:-}"; [ $# -gt 0 ] && shift
    case "$cmd" in
        setup)   cmd_setup ;;
        start)   cmd_start ;;
        stop)    cmd_stop ;;
        restart) cmd_stop; T0=$(now_ms); cmd_start ;;
        status)  cmd_status ;;
        config)  require_root; check_base; [ $# -le 1 ] || usage; install_config "${1:-}" ;;
        cli)     cmd_cli "$@" ;;
        -h|--help|help) usage ;;
        *) usage ;;
    esac
}

main "$@"
