"""The guest agent of busybox (initramfs) VMs: the QEMU guest agent protocol in busybox sh.

Debian's qemu-guest-agent serves VMs booted from their own disk; a busybox VM gets this
script instead, on the same port (``org.qemu.guest_agent.0``), so the host's one client
(``qga.py``) serves both. ``/init`` starts it; it answers one JSON command per line:
guest-sync-delimited, guest-sync, guest-ping, guest-info, guest-exec (path, arg, env,
input-data, capture-output), guest-exec-status, guest-file-open/read/write/close and
guest-shutdown (as the power button: the instance command gets SIGTERM).

A small awk program turns a request into shell assignments and files (strings land in
files ``v.KEY``, raw, and ``q.KEY``, shell-quoted; arrays of strings in ``v.KEY`` as
quoted words), so no JSON string reaches ``eval`` unquoted. Values are strings, integers,
booleans, arrays of strings and objects: what QGA's commands take; anything else is
refused ("Invalid or unsupported JSON").

One extension, invisible to standard clients: while a command runs, guest-exec-status
also returns ``cumulo-out`` / ``cumulo-err``, base64 of the output written since the
previous status; once it exited, ``out-data`` / ``err-data`` hold all of it, as in
qemu-guest-agent. The host writes the part it has not had yet (``qga.QgaSession``), so
output of a long command reaches the user while it runs. Commands run in their own
session (setsid): the host kills one with ``kill -9 -PID``.
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
function name(k) { gsub(/-/, "_", k); if (k !~ /^[a-z_][a-z0-9_]*$/) bad(); return k }
function save(f, v) { printf "%s", v > f; close(f) }
function val(k,   c, v, words) {
  ws()
  c = substr(s, p, 1)
  if (c == "{") { obj(); return }
  if (c == "\"") {
    v = str()
    save(d "/v." k, v)
    if (length(v) < 4096) save(d "/q." k, quote(v))
    if (v ~ /^[A-Za-z0-9_.+-]*$/ && length(v) < 256) print k "='" v "'"
    return
  }
  if (c == "[") {
    p++; ws(); words = ""
    if (substr(s, p, 1) == "]") { p++; save(d "/v." k, ""); return }
    while (1) {
      ws()
      if (substr(s, p, 1) != "\"") bad()
      words = words " " quote(str())
      ws(); c = substr(s, p, 1); p++
      if (c == "]") break
      if (c != ",") bad()
    }
    save(d "/v." k, words)
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
}
"""

GUEST_SCRIPT = r"""#!/bin/sh
# cumulo-qga PORT [DIR]: the QEMU guest agent protocol (a subset) on one virtio-serial
# port; see drivers/vm/guest_qga.py on the host for what it answers.
port=$1
d=${2:-/run/qga}
mkdir -p $d/x $d/p $d/f
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
do_exec() {
  [ -f $d/q.path ] || { fail GenericError "Parameter 'path' is missing"; return; }
  n=$((n + 1))
  x=$d/x/$n
  mkdir -p $x
  [ -f $d/v.env ] && echo "export $(cat $d/v.env)" > $x/cmd
  echo "exec $(cat $d/q.path) $(cat $d/v.arg 2>/dev/null)" >> $x/cmd
  if [ -f $d/v.input_data ]; then base64 -d $d/v.input_data > $x/in; else : > $x/in; fi
  if [ "$capture_output" = true ]; then out=$x/out err=$x/err; else out=/dev/null err=/dev/null; fi
  : > $x/out; : > $x/err; echo 0 > $x/oo; echo 0 > $x/eo
  setsid sh -c 'sh "$1/cmd"; echo $? > "$1/c"; mv "$1/c" "$1/code"' - $x \
    < $x/in > $out 2> $err 3>&- 4>&- &
  ln -s $x $d/p/$!
  reply "{\"pid\": $!}"
}
new() {  # TAG FILE OFFSET-FILE: the output written since the last status, as a JSON member
  off=$(cat "$3"); end=$(size "$2")
  [ "$end" -gt "$off" ] || return 0
  tail -c +$((off + 1)) "$2" | head -c 49152 > $d/chunk
  echo $((off + $(size $d/chunk))) > "$3"
  printf ', "%s": "%s"' "$1" "$(b64 $d/chunk)"
}
do_status() {
  x=$d/p/${pid:-none}
  [ -d $x ] || { fail GenericError "Invalid parameter 'pid'"; return; }
  if [ ! -f $x/code ]; then
    st=$(sed 's/.*) //; s/ .*//' /proc/$pid/stat 2>/dev/null)
    if [ -n "$st" ] && [ "$st" != Z ]; then
      printf '{"return": {"exited": false%s%s}}\n' "$(new cumulo-out $x/out $x/oo)" \
        "$(new cumulo-err $x/err $x/eo)" >&3
      return
    fi
  fi
  wait $pid 2>/dev/null
  if [ -f $x/code ]; then how="\"exitcode\": $(cat $x/code)"; else how='"signal": 9'; fi
  { printf '{"return": {"exited": true, %s, "out-data": "' "$how"; b64 $x/out
    printf '", "err-data": "'; b64 $x/err; printf '"}}\n'; } >&3
  rm -rf "$(readlink $x)" $x
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
  cp $d/v.path $d/f/$h.path
  echo 0 > $d/f/$h.pos
  reply $h
}
do_file() {  # read | write | close
  f=$d/f/${handle:-none}
  [ -f $f.path ] || { fail GenericError "handle '$handle' has not been found"; return; }
  path=$(cat $f.path); pos=$(cat $f.pos)
  case $1 in
    read)
      count=${count:-4096}
      tail -c +$((pos + 1)) "$path" 2>/dev/null | head -c $count > $d/chunk
      got=$(size $d/chunk)
      echo $((pos + got)) > $f.pos
      eof=false; [ "$got" -lt "$count" ] && eof=true
      printf '{"return": {"count": %s, "buf-b64": "%s", "eof": %s}}\n' $got \
        "$(b64 $d/chunk)" $eof >&3 ;;
    write)
      base64 -d $d/v.buf_b64 > $d/chunk 2>/dev/null
      cat $d/chunk >> "$path" || { fail GenericError "cannot write to '$path'"; return; }
      got=$(size $d/chunk)
      echo $((pos + got)) > $f.pos
      reply "{\"count\": $got, \"eof\": false}" ;;
    close) rm -f $f.path $f.pos; reply "{}" ;;
  esac
}
info='{"version": "@VERSION@", "supported_commands": [@COMMANDS@]}'
exec 3<>"$port"
while :; do
  # no host connected: the port reads as end of file at once
  if ! IFS= read -r line <&3; then nap 0.05; continue; fi
  rm -f $d/v.* $d/q.*
  bad="" execute="" id="" pid="" handle="" count="" mode="" capture_output=""
  eval "$(printf '%s\n' "$line" | awk -v d=$d -f $d/json.awk)"
  if [ -n "$bad" ]; then fail GenericError "Invalid or unsupported JSON"; continue; fi
  case "$execute" in
    guest-sync-delimited) printf '\377' >&3; reply "${id:-0}" ;;
    guest-sync) reply "${id:-0}" ;;
    guest-ping) reply "{}" ;;
    guest-info) reply "$info" ;;
    guest-exec) do_exec ;;
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
