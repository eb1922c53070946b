# corral tiny guest: flattens the YAML corral writes into seeds (corral.cloudinit.yamlout)
# into one "path=value" line per scalar, e.g.
#     users.1.ssh_authorized_keys.0="ssh-ed25519 AAAA..."
#     runcmd.1=["touch", "/tmp/x"]
# The subset it reads: block mappings and sequences indented by two spaces, a mapping item
# of a sequence starting on its "- " line, keys plain or JSON-quoted, scalars plain or
# JSON-quoted (left quoted in the output: see unquote in cloud-init), flow sequences kept
# as they are. Comment lines and a "#cloud-config" first line are skipped.
function push(ind, prefix) { depth++; find[depth] = ind; fpre[depth] = prefix; fcount[depth] = 0 }
function join(prefix, name) { return prefix == "" ? name : prefix "." name }
function keyline(text, ind,    key, rest, p) {
    if (substr(text, 1, 1) == "\"") {
        p = index(substr(text, 2), "\":")
        if (p == 0) return 0
        key = substr(text, 2, p - 1)
        rest = substr(text, p + 3)
    } else {
        if (!match(text, /^[A-Za-z0-9_][A-Za-z0-9_.-]*:( |$)/)) return 0
        p = index(text, ":")
        key = substr(text, 1, p - 1)
        rest = substr(text, p + 1)
    }
    sub(/^ +/, "", rest)
    if (rest == "") push(ind + 2, join(fpre[depth], key))
    else print join(fpre[depth], key) "=" rest
    return 1
}
BEGIN { depth = 0; find[0] = 0; fpre[0] = ""; fcount[0] = 0 }
/^[ ]*#/ || /^[ ]*$/ { next }
{
    line = $0
    match(line, /^ */)
    ind = RLENGTH
    text = substr(line, ind + 1)
    while (depth > 0 && find[depth] > ind) depth--
    if (substr(text, 1, 2) == "- " || text == "-") {
        n = fcount[depth]++
        prefix = join(fpre[depth], n)
        item = substr(text, 3)
        if (item == "") next
        depth_before = depth
        push(ind + 2, prefix)
        if (!keyline(item, ind + 2)) { depth = depth_before; print prefix "=" item }
        next
    }
    keyline(text, ind)
}
