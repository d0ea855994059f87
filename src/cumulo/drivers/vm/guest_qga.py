"""The guest agent of busybox (initramfs) VMs: the QEMU guest agent protocol in busybox sh.

Debian's qemu-guest-agent serves VMs booted from their own disk; a busybox VM gets this
script instead, on the same port (``org.qemu.guest_agent.0``), so the host's one client
(``qga.py``) serves both. ``/init`` starts it; it answers one JSON command per line:
guest-sync-delimited, guest-sync, guest-ping, guest-info, guest-exec (path, arg, env,
input-data, capture-output), guest-exec-status, guest-file-open/read/write/close and
guest-shutdown (as the power button: the instance command gets SIGTERM).

A small awk program turns a request into shell assignments (numbers, booleans, plain
words) and files (every string lands raw in ``v.KEY``; a guest-exec's path, arguments and
environment, shell-quoted, in the command file ``x/N.cmd``), so no JSON string reaches
``eval`` unquoted. Values are strings, integers,
booleans, arrays of strings and objects: what QGA's commands take; anything else is
refused ("Invalid or unsupported JSON").

One extension, invisible to standard clients: while a command runs, guest-exec-status
also returns ``cumulo-out`` / ``cumulo-err``, base64 of the output written since the
previous status; once it exited, ``out-data`` / ``err-data`` hold all of it, as in
qemu-guest-agent. The host writes the part it has not had yet (``qga.QgaSession``), so
output of a long command reaches the user while it runs. Commands run in their own
session (setsid): the host kills one with ``kill -9 -PID``; unlike sh's background jobs
they do not ignore SIGINT, so ^C works on a terminal (qga_tty.py).
"""

from __future__ import annotations

VERSION = "cumulo-busybox-1"
COMMANDS = ("guest-sync-delimited", "guest-sync", "guest-ping", "guest-info", "guest-exec",
            "guest-exec-status", "guest-file-open", "guest-file-read", "guest-file-write",
            "guest-file-close", "guest-shutdown")

PARSER = r"""# one JSON request (a line) -> sh assignments on stdout, strings in files under d
function bad() { print "bad=1"; exit }
function ws() { while (substr(s, p, 1) ~ /[ \t\r\n]/) p++ }
function hex(h,   i, n, c) {
  n = 0
  for (i = 1; i <= 4; i++) {
    c = index("0123456789abcdef", tolower(substr(h, i, 1)))
    if (c == 0) bad()
    n = n * 16 + c - 1
  }
  return n
}
function utf8(n) {
  if (n < 128) return sprintf("%c", n)
  if (n < 2048) return sprintf("%c%c", 192 + int(n / 64), 128 + n % 64)
  if (n < 65536) return sprintf("%c%c%c", 224 + int(n / 4096), 128 + int(n / 64) % 64,
                                128 + n % 64)
  return sprintf("%c%c%c%c", 240 + int(n / 262144), 128 + int(n / 4096) % 64,
                 128 + int(n / 64) % 64, 128 + n % 64)
}
function str(   out, c, n, m) {
  p++
  out = ""
  while (1) {
    if (match(substr(s, p), /^[^"\\]+/)) { out = out substr(s, p, RLENGTH); p += RLENGTH }
    c = substr(s, p, 1)
    if (c == "\"") { p++; return out }
    if (c != "\\") bad()
    c = substr(s, p + 1, 1)
    p += 2
    if (c == "n") out = out "\n"
    else if (c == "t") out = out "\t"
    else if (c == "r") out = out "\r"
    else if (c == "b") out = out "\b"
    else if (c == "f") out = out "\f"
    else if (c == "u") {
      n = hex(substr(s, p, 4)); p += 4
      if (n >= 55296 && n < 56320 && substr(s, p, 2) == "\\u") {
        m = hex(substr(s, p + 2, 4)); p += 6
        n = 65536 + (n - 55296) * 1024 + (m - 56320)
      }
      out = out utf8(n)
    } else out = out c
  }
}
function quote(v) { gsub(/'/, "'\\''", v); return "'" v "'" }
# only the names of QGA's members that these commands take: each becomes a sh variable,
# and another ("n", "d", "x") would overwrite the agent's own
function name(k) {
  gsub(/-/, "_", k)
  if (k !~ /^(execute|arguments|id|pid|handle|count|mode|path)$/ &&
      k !~ /^(arg|env|input_data|capture_output|buf_b64)$/) bad()
  return k
}
function save(f, v) { printf "%s", v > f; close(f) }
function val(k,   c, v, words) {
  ws()
  c = substr(s, p, 1)
  if (c == "{") { obj(); return }
  if (c == "\"") {
    v = str()
    save(d "/v." k, v)
    print "f_" k "=1"
    if (k == "path") qpath = quote(v)
    if (k == "execute") exe = v
    if (v ~ /^[A-Za-z0-9_.+-]*$/ && length(v) < 256) print k "='" v "'"
    return
  }
  if (c == "[") {
    p++; ws(); words = ""
    if (substr(s, p, 1) == "]") { p++; list[k] = ""; return }
    while (1) {
      ws()
      if (substr(s, p, 1) != "\"") bad()
      words = words " " quote(str())
      ws(); c = substr(s, p, 1); p++
      if (c == "]") break
      if (c != ",") bad()
    }
    list[k] = words
    return
  }
  if (match(substr(s, p), /^[-+.0-9a-zE]+/)) {
    v = substr(s, p, RLENGTH); p += RLENGTH
    if (v !~ /^(-?[0-9]+|true|false|null)$/) bad()
    print k "=" v
    return
  }
  bad()
}
function obj(   c, k) {
  p++; ws()
  if (substr(s, p, 1) == "}") { p++; return }
  while (1) {
    ws()
    if (substr(s, p, 1) != "\"") bad()
    k = name(str())
    ws()
    if (substr(s, p, 1) != ":") bad()
    p++
    val(k)
    ws(); c = substr(s, p, 1); p++
    if (c == "}") return
    if (c != ",") bad()
  }
}
{
  s = $0
  sub(/^[^{]*/, "", s)   # 0xFF (the client's parser reset) and other leftovers
  if (s == "") exit
  p = 1
  obj()
  if (exe == "guest-exec" && qpath != "") {   # the command for sh: x/N.cmd
    f = d "/x/" n ".cmd"
    if ("env" in list) print "export" list["env"] > f
    print "exec " qpath list["arg"] > f
    close(f)
  }
}
"""

GUEST_SCRIPT = r"""#!/bin/sh
# cumulo-qga PORT [DIR]: the QEMU guest agent protocol (a subset) on one virtio-serial
# port; see drivers/vm/guest_qga.py on the host for what it answers. Few forks: each
# costs milliseconds under TCG (state in shell variables, builtins where they do).
port=$1
d=${2:-/run/qga}
mkdir -p $d/x $d/f
cat > $d/json.awk <<'EOF'
@PARSER@EOF
mkfifo $d/idle
exec 4<>$d/idle
nap() { read -t "$1" _ <&4; }
reply() { printf '{"return": %s}\n' "$1" >&3; }
fail() {  # CLASS MESSAGE
  printf '{"error": {"class": "%s", "desc": "%s"}}\n' "$1" \
    "$(printf '%s' "$2" | tr -d '\000-\037' | sed 's/[\\"]/\\&/g')" >&3
}
size() { stat -c %s "$1" 2>/dev/null || echo 0; }
b64() { base64 -w 0 "$1" 2>/dev/null; }
n=0
do_exec() {  # the awk program wrote the command to x/N.cmd
  [ -f $d/x/$n.cmd ] || { fail GenericError "Parameter 'path' is missing"; return; }
  x=$d/x/$n
  in=/dev/null
  [ -n "$f_input_data" ] && base64 -d $d/v.input_data > $x.in && in=$x.in
  out=/dev/null err=/dev/null
  [ "$capture_output" = true ] && out=$x.out err=$x.err
  : > $x.out; : > $x.err
  # in a session of its own, SIGINT not ignored (as "&" would): setsid twice, the second
  # forks; the command's sh says its pid, then lets go of the pipe
  pid=$(setsid setsid sh -c 'echo $$; exec > "$2" 2> "$3"; sh "$1.cmd"; echo $? > "$1.c"
    mv "$1.c" "$1.code"' - $x $out $err < $in 3>&- 4>&-)
  case "$pid" in ""|*[!0-9]*) fail GenericError "cannot start the command"; return ;; esac
  eval "x_$pid=$n o_$pid=0 e_$pid=0"
  reply "{\"pid\": $pid}"
}
new() {  # TAG FILE OFFSET-VAR: output written since the last status, a JSON member, to fd 3
  eval "off=\$$3"
  : > $d/chunk
  dd if="$2" of=$d/chunk bs=49152 skip=$off iflag=skip_bytes count=1 2>/dev/null
  [ -s $d/chunk ] || return 0
  eval "$3=$((off + $(size $d/chunk)))"
  printf ', "%s": "' "$1"; b64 $d/chunk; printf '"'
}
do_status() {
  case "$pid" in *[!0-9]*|"") pid=none ;; esac
  eval "k=\${x_$pid:-}"   # (not n: the count of commands, the next one's files)
  [ -n "$k" ] || { fail GenericError "Invalid parameter 'pid'"; return; }
  x=$d/x/$k
  if [ ! -f $x.code ]; then
    st=""
    read -r st < /proc/$pid/stat 2>/dev/null
    st=${st##*) }
    if [ -n "$st" ] && [ "${st%% *}" != Z ]; then
      { printf '{"return": {"exited": false'; new cumulo-out $x.out o_$pid
        new cumulo-err $x.err e_$pid; printf '}}\n'; } >&3
      return
    fi
  fi
  how='"signal": 9'
  if [ -f $x.code ]; then read -r code < $x.code; how="\"exitcode\": $code"; fi
  { printf '{"return": {"exited": true, %s, "out-data": "' "$how"; b64 $x.out
    printf '", "err-data": "'; b64 $x.err; printf '"}}\n'; } >&3
  rm -f $x.cmd $x.in $x.out $x.err $x.code
  unset x_$pid o_$pid e_$pid
}
h=0
do_open() {
  path=$(cat $d/v.path 2>/dev/null)
  case "${mode:-r}" in
    r*) [ -f "$path" ] && [ -r "$path" ] ;;
    w*) : 2>/dev/null > "$path" ;;
    a*) : 2>/dev/null >> "$path" ;;
    *) false ;;
  esac || { fail GenericError "failed to open file '$path' (mode: '${mode:-r}')"; return; }
  h=$((h + 1))
  cp $d/v.path $d/f/$h
  eval "p_$h=0"
  reply $h
}
do_file() {  # read | write | close
  case "$handle" in *[!0-9]*|"") handle=none ;; esac
  eval "pos=\${p_$handle:-}"
  [ -n "$pos" ] || { fail GenericError "handle '$handle' has not been found"; return; }
  path=$(cat $d/f/$handle)
  case $1 in
    read)
      count=${count:-4096}
      : > $d/chunk
      dd if="$path" of=$d/chunk bs=$count skip=$pos iflag=skip_bytes count=1 2>/dev/null
      got=$(size $d/chunk)
      eval "p_$handle=$((pos + got))"
      eof=false; [ "$got" -lt "$count" ] && eof=true
      { printf '{"return": {"count": %s, "buf-b64": "' $got; b64 $d/chunk
        printf '", "eof": %s}}\n' $eof; } >&3 ;;
    write)
      base64 -d $d/v.buf_b64 > $d/chunk 2>/dev/null
      cat $d/chunk >> "$path" || { fail GenericError "cannot write to '$path'"; return; }
      got=$(size $d/chunk)
      eval "p_$handle=$((pos + got))"
      reply "{\"count\": $got, \"eof\": false}" ;;
    close) rm -f $d/f/$handle; unset p_$handle; reply "{}" ;;
  esac
}
simple() {  # {"execute": "X"} or {"execute": "X", "arguments": {"id|pid|handle": N}}
  l="{${line#*\{}"      # after the 0xFF of a sync: no fork for the commonest requests
  case "$l" in
    '{"execute": "'*'"}') execute=${l#*: \"}; execute=${execute%\"\}} ;;
    '{"execute": "'*'", "arguments": {"'*'": '*'}}')
      case "${l#*\"arguments\"}" in *,*) return 1 ;; esac      # one argument only
      execute=${l#*: \"}; execute=${execute%%\"*}
      key=${l#*\"arguments\": \{\"}; key=${key%%\"*}
      v=${l##*: }; v=${v%\}\}}
      case "$key" in id|pid|handle) ;; *) return 1 ;; esac
      case "$v" in ""|*[!0-9]*) return 1 ;; esac
      eval "$key=$v" ;;
    *) return 1 ;;
  esac
  case "$execute" in ""|*[!a-z-]*) execute=""; return 1 ;; esac
}
info='{"version": "@VERSION@", "supported_commands": [@COMMANDS@]}'
exec 3<>"$port"
while :; do
  # no host connected: the port reads as end of file at once
  if ! IFS= read -r line <&3; then nap 0.05; continue; fi
  bad="" execute="" id="" pid="" handle="" count="" mode="" capture_output=""
  f_path="" f_input_data="" f_buf_b64=""
  simple || eval "$(printf '%s\n' "$line" | awk -v d=$d -v n=$((n + 1)) -f $d/json.awk)"
  if [ -n "$bad" ]; then fail GenericError "Invalid or unsupported JSON"; continue; fi
  case "$execute" in
    guest-sync-delimited) printf '\377' >&3; reply "${id:-0}" ;;
    guest-sync) reply "${id:-0}" ;;
    guest-ping) reply "{}" ;;
    guest-info) reply "$info" ;;
    guest-exec) n=$((n + 1)); do_exec ;;
    guest-exec-status) do_status ;;
    guest-file-open) do_open ;;
    guest-file-read) do_file read ;;
    guest-file-write) do_file write ;;
    guest-file-close) do_file close ;;
    guest-shutdown) kill -TERM $(cat /run/app.pid) 2>/dev/null ;;
    "") ;;
    *) fail CommandNotFound "The command $execute has not been found" ;;
  esac
done
""".replace("@PARSER@", PARSER).replace("@VERSION@", VERSION).replace(
    "@COMMANDS@", ", ".join(f'{{"name": "{c}", "enabled": true, "success-response": '
                            f'{"false" if c == "guest-shutdown" else "true"}}}'
                            for c in COMMANDS))
