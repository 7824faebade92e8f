#!/bin/sh
# Tests for the OpenWrt package's shell scripts (openwrt/linkpool/files), run off the
# router: tests named *_with_standin_* load stand-ins for OpenWrt's /lib/functions.sh,
# network.sh, procd.sh and the uci command (openwrt/tests/standin); the others run
# `sh -n` and shellcheck over the scripts.
#
#   openwrt/tests/run.sh [NAME_FILTER]
#
# Every script test runs under each shell in $TEST_SHELLS (default "dash busybox": Debian's
# sh and OpenWrt's own ash). A missing shell or tool is a failure, never a skip.
# Prints one line per test, then "N passed, N failed"; exits 1 if anything failed.

set -u

here="$(cd "$(dirname "$0")" && pwd)"
files="$here/../linkpool/files"
standin="$here/standin"
fixtures="$here/fixtures"
INIT="$files/linkpool.init"
DEFAULTS="$files/linkpool.uci-defaults"
SHIPPED_CONFIG="$files/linkpool.config"
filter="${1:-}"
TEST_SHELLS="${TEST_SHELLS:-dash busybox}"

passed=0
failed=0
T=""
SH=""

# --- helpers used by the tests -------------------------------------------------------

# Fresh state for one test: UCI config dir with OpenWrt-like network and firewall.
setup() {
	T="$(mktemp -d)"
	mkdir -p "$T/config"
	cp "$fixtures/network" "$fixtures/firewall" "$T/config/"
	: >"$T/procd.log"
	: >"$T/netstate"
}

# Writes stdin to the test's /etc/config/linkpool.
linkpool_config() {
	cat >"$T/config/linkpool"
}

# netifd's view: "NETWORK L3_DEVICE PHYS_DEVICE" lines for networks that are up.
netstate() {
	cat >"$T/netstate"
}

uci_t() {
	PATH="$standin/bin:$PATH" UCI_CONFDIR="$T/config" uci "$@"
}

# Runs the init script's ACTION (start | reload | stop | triggers) through the rc.common stand-in.
run_init() {
	PATH="$standin/bin:$PATH" UCI_CONFDIR="$T/config" \
		STANDIN_PROCD_LOG="$T/procd.log" STANDIN_NETWORK_STATE="$T/netstate" \
		$SH "$standin/rc.common" "$INIT" "$1"
}

# Runs the uci-defaults script the way OpenWrt does: sourced in a subshell.
# shellcheck disable=SC2016  # $1 is expanded by the inner shell
run_uci_defaults() {
	(cd "$(dirname "$DEFAULTS")" &&
		PATH="$standin/bin:$PATH" UCI_CONFDIR="$T/config" \
			$SH -c '. "$1"' uci-defaults "$DEFAULTS")
}

# procd calls of the last run, without the logger lines.
procd_calls() {
	grep -v '^logger ' "$T/procd.log"
}

assert_eq() { # WHAT EXPECTED ACTUAL
	[ "$2" = "$3" ] && return 0
	printf '    %s:\n      expected: %s\n      actual:   %s\n' "$1" "$2" "$3"
	return 1
}

assert_lines() { # WHAT EXPECTED_TEXT ACTUAL_TEXT
	[ "$2" = "$3" ] && return 0
	printf '    %s differ (expected vs actual):\n' "$1"
	printf '%s\n' "$2" >"$T/expected"
	printf '%s\n' "$3" >"$T/actual"
	diff -u "$T/expected" "$T/actual" | sed 's/^/      /'
	return 1
}

assert_contains() { # WHAT NEEDLE HAYSTACK
	case "$3" in *"$2"*) return 0 ;; esac
	printf '    %s: %s not found in:\n%s\n' "$1" "$2" "$3" | sed '3,$s/^/      /'
	return 1
}

assert_not_contains() { # WHAT NEEDLE HAYSTACK
	case "$3" in *"$2"*) ;; *) return 0 ;; esac
	printf '    %s: %s unexpectedly found in:\n%s\n' "$1" "$2" "$3" | sed '3,$s/^/      /'
	return 1
}

# --- init script ---------------------------------------------------------------------

COMMAND_PREFIX='procd_set_param [command] [/usr/sbin/linkpool] [run] [--uci] [/etc/config/linkpool]'

test_init_starts_with_standin_procd() {
	linkpool_config <<-'EOF'
		config gateway 'main'
			option enabled '1'
			option bundle 'LP1:bWVtYmVyID0gYWxpY2UK'
			list lan_network 'lan'

		config uplink 'wan'
			option network 'wan'
	EOF
	netstate <<-'EOF'
		lan br-lan br-lan
		wan eth1 eth1
	EOF
	run_init start || return 1
	assert_lines "procd calls" "procd_open_service [linkpool.init]
procd_open_instance
$COMMAND_PREFIX [--resolve] [lan=br-lan] [--resolve] [wan=eth1]
procd_set_param [file] [/etc/config/linkpool]
procd_set_param [respawn] [3600] [5] [5]
procd_set_param [stdout] [1]
procd_set_param [stderr] [1]
procd_set_param [term_timeout] [10]
procd_close_instance
procd_close_service
procd_set_config_changed [firewall]" "$(procd_calls)"
}

# Options the daemon reads from the file itself (spreading modes, probe intervals) add
# nothing to the command line; the file parameter makes a reload restart it on a change.
test_init_spreading_options_stay_in_the_file_with_standin() {
	linkpool_config <<-'EOF'
		config gateway 'main'
			option enabled '1'
			option bundle 'LP1:bWVtYmVyID0gYWxpY2UK'
			list lan_network 'lan'
			option spread_interactive 'redundant'
			option spread_bulk 'session'
			option spread_default 'packet'

		config uplink 'wan'
			option network 'wan'
			option probe_interval_ms '1000'
	EOF
	netstate <<-'EOF'
		lan br-lan br-lan
		wan eth1 eth1
	EOF
	run_init start || return 1
	local calls
	calls="$(procd_calls)"
	assert_contains "command" "$COMMAND_PREFIX [--resolve] [lan=br-lan] [--resolve] [wan=eth1]
procd_set_param [file] [/etc/config/linkpool]" "$calls" &&
		assert_not_contains "no spreading argument" "spread" "$calls"
}

test_init_disabled_does_not_start_with_standin() {
	linkpool_config <<-'EOF'
		config gateway 'main'
			option enabled '0'
			option bundle 'LP1:bWVtYmVyID0gYWxpY2UK'
			list lan_network 'lan'
	EOF
	echo "lan br-lan br-lan" | netstate
	run_init start || return 1
	assert_lines "procd calls" "procd_open_service [linkpool.init]
procd_close_service
procd_set_config_changed [firewall]" "$(procd_calls)" &&
		assert_contains "log" "disabled" "$(cat "$T/procd.log")"
}

test_init_shipped_config_is_safe_with_standin() {
	cp "$SHIPPED_CONFIG" "$T/config/linkpool"
	netstate <<-'EOF'
		lan br-lan br-lan
		wan eth1 eth1
	EOF
	run_init start || return 1
	assert_not_contains "shipped config (disabled)" "procd_open_instance" "$(procd_calls)" || return 1

	# Enabled but still without a bundle: not started either.
	uci_t set linkpool.main.enabled=1 && uci_t commit linkpool || return 1
	: >"$T/procd.log"
	run_init start || return 1
	assert_not_contains "enabled, empty bundle" "procd_open_instance" "$(procd_calls)" || return 1
	assert_contains "log" "no member bundle" "$(cat "$T/procd.log")" || return 1

	# With a bundle, the shipped defaults resolve lan and wan.
	uci_t set linkpool.main.bundle=LP1:bWVtYmVyID0gYWxpY2UK && uci_t commit linkpool || return 1
	: >"$T/procd.log"
	run_init start || return 1
	assert_contains "enabled with bundle" \
		"$COMMAND_PREFIX [--resolve] [lan=br-lan] [--resolve] [wan=eth1]" "$(procd_calls)"
}

test_init_bundle_file_with_standin() {
	linkpool_config <<-EOF
		config gateway 'main'
			option enabled '1'
			option bundle ''
			option bundle_file '$T/member.bundle'
			list lan_network 'lan'
	EOF
	echo "lan br-lan br-lan" | netstate
	: >"$T/member.bundle"
	run_init start || return 1
	assert_not_contains "empty bundle file" "procd_open_instance" "$(procd_calls)" || return 1

	echo "LP1:bWVtYmVyID0gYWxpY2UK" >"$T/member.bundle"
	: >"$T/procd.log"
	run_init start || return 1
	assert_contains "bundle file is watched" \
		"procd_set_param [file] [/etc/config/linkpool]
procd_append_param [file] [$T/member.bundle]" "$(procd_calls)"
}

test_init_resolves_every_network_with_standin() {
	# PPPoE uplink (l3 device differs from the port), a mesh, a down uplink, a duplicate
	# network, and an uplink bound to a fixed device (nothing to resolve).
	linkpool_config <<-'EOF'
		config gateway 'main'
			option enabled '1'
			option bundle 'LP1:bWVtYmVyID0gYWxpY2UK'
			list lan_network 'lan'
			list lan_network 'guest'
			list mesh_network 'mesh'

		config uplink 'wan'
			option network 'wan'

		config uplink 'wwan'
			option network 'wwan'

		config uplink 'wan_again'
			option network 'wan'

		config uplink 'lte'
			option device 'wwan0'
	EOF
	netstate <<-'EOF'
		lan br-lan br-lan
		guest br-guest br-guest
		mesh bat0 bat0
		wan pppoe-wan eth1
	EOF
	run_init start || return 1
	assert_contains "command" \
		"$COMMAND_PREFIX [--resolve] [lan=br-lan] [--resolve] [guest=br-guest] [--resolve] [mesh=bat0] [--resolve] [wan=pppoe-wan]
" "$(procd_calls)
" || return 1
	assert_contains "log of the down network" "network 'wwan' has no device yet" "$(cat "$T/procd.log")"
}

test_init_anonymous_sections_and_quoting_with_standin() {
	linkpool_config <<-'EOF'
		# comments, double quotes and anonymous sections, as LuCI may write them
		config gateway
			option enabled "1"    # trailing comment
			option bundle "LP1:bWVtYmVyID0gYWxpY2UK"
			list lan_network "lan"

		config uplink
			option network wan
	EOF
	netstate <<-'EOF'
		lan br-lan br-lan
		wan eth1 eth1
	EOF
	run_init start || return 1
	assert_contains "command" "$COMMAND_PREFIX [--resolve] [lan=br-lan] [--resolve] [wan=eth1]" "$(procd_calls)"
}

test_init_triggers_with_standin() {
	linkpool_config <<-'EOF'
		config gateway 'main'
			option enabled '1'
			list lan_network 'lan'
			list mesh_network 'mesh'

		config uplink 'wan'
			option network 'wan'

		config uplink 'wwan'
			option network 'wwan'
	EOF
	run_init triggers || return 1
	assert_lines "procd calls" "procd_open_service [linkpool.init]
procd_add_reload_trigger [linkpool]
procd_open_trigger
procd_add_interface_trigger [interface.*] [wan] [/etc/init.d/linkpool] [reload]
procd_add_interface_trigger [interface.*] [wwan] [/etc/init.d/linkpool] [reload]
procd_add_interface_trigger [interface.*] [mesh] [/etc/init.d/linkpool] [reload]
procd_close_trigger
procd_close_service" "$(procd_calls)"
}

# --- init script: the relay port in the firewall -------------------------------------

# Appends a zone for network 'mesh' to the test's firewall config, as a community
# network's router has it: nothing comes in from the mesh unasked.
mesh_zone() {
	cat >>"$T/config/firewall" <<-'EOF'

		config zone
			option name 'mesh'
			list network 'mesh'
			option input 'REJECT'
			option output 'ACCEPT'
			option forward 'REJECT'
	EOF
}

# The firewall rules the last run handed procd (inside procd_open_data), one line each:
# the rule's json_add_string calls as KEY=VALUE words, in order.
firewall_rules() {
	awk '
		/^procd_open_data/ { data = 1; next }
		/^procd_close_data/ { data = 0; next }
		data && /^json_add_array \[firewall\]$/ { fw = 1; next }
		fw && /^json_close_array/ { fw = 0; next }
		fw && /^json_add_object/ { rule = ""; next }
		fw && /^json_close_object/ { print rule; next }
		fw && /^json_add_string / {
			s = $0
			sub(/^json_add_string \[/, "", s)
			key = s
			sub(/\].*$/, "", key)
			value = s
			sub(/^[^]]*\] \[/, "", value)
			sub(/\]$/, "", value)
			rule = rule (rule == "" ? "" : " ") key "=" value
		}
	' "$T/procd.log"
}

RULE_PREFIX='type=rule name=Allow-linkpool-mesh'
RULE_SUFFIX='proto=udp dest_port=7118 target=ACCEPT'

# A mesh network in a zone of its own that rejects input: the instance carries one rule
# opening the relay port from that zone on the mesh device, and the firewall is told to
# reload. The owner does not share the line: a member that only borrows needs the port
# too (its neighbours' hellos, and the replies their relays bring back).
test_init_opens_the_relay_port_on_the_mesh_with_standin() {
	linkpool_config <<-'EOF'
		config gateway 'main'
			option enabled '1'
			option bundle 'LP1:bWVtYmVyID0gYWxpY2UK'
			list lan_network 'lan'
			list mesh_network 'mesh'
			option share '0'

		config uplink 'wan'
			option network 'wan'
	EOF
	mesh_zone
	netstate <<-'EOF'
		lan br-lan br-lan
		mesh bat0 bat0
		wan eth1 eth1
	EOF
	run_init start || return 1
	assert_lines "procd calls" "procd_open_service [linkpool.init]
procd_open_instance
$COMMAND_PREFIX [--resolve] [lan=br-lan] [--resolve] [mesh=bat0] [--resolve] [wan=eth1]
procd_set_param [file] [/etc/config/linkpool]
procd_set_param [respawn] [3600] [5] [5]
procd_set_param [stdout] [1]
procd_set_param [stderr] [1]
procd_set_param [term_timeout] [10]
procd_open_data
json_add_array [firewall]
json_add_object []
json_add_string [type] [rule]
json_add_string [name] [Allow-linkpool-mesh]
json_add_string [src] [mesh]
json_add_string [device] [bat0]
json_add_string [proto] [udp]
json_add_string [dest_port] [7118]
json_add_string [target] [ACCEPT]
json_close_object
json_close_array
procd_close_data
procd_close_instance
procd_close_service
procd_set_config_changed [firewall]" "$(procd_calls)"
}

# Several mesh networks: one rule per zone and device (two networks on one device in one
# zone make one), a zone found by its device list or by a network option holding several
# names, a disabled zone passed over, and no rule for a network in no zone (logged) or
# down (no device: the interface trigger reloads us once it is up).
test_init_firewall_rule_per_zone_and_device_with_standin() {
	linkpool_config <<-'EOF'
		config gateway 'main'
			option enabled '1'
			option bundle 'LP1:bWVtYmVyID0gYWxpY2UK'
			list lan_network 'lan'
			list mesh_network 'mesh'
			list mesh_network 'mesh6'
			list mesh_network 'olsr'
			list mesh_network 'adhoc'
			list mesh_network 'lost'
			list mesh_network 'later'

		config uplink 'wan'
			option network 'wan'
	EOF
	cat >>"$T/config/firewall" <<-'EOF'

		config zone
			option name 'mesh'
			list network 'mesh'
			list network 'mesh6'
			option input 'REJECT'

		config zone
			option name 'old'
			option enabled '0'
			option network 'adhoc'

		config zone
			option name 'community'
			option device 'br-olsr'
			option input 'REJECT'

		config zone
			option name 'freifunk'
			option network 'ff adhoc'
			option input 'REJECT'
	EOF
	netstate <<-'EOF'
		lan br-lan br-lan
		mesh bat0 bat0
		mesh6 bat0 bat0
		olsr br-olsr br-olsr
		adhoc wlan1 wlan1
		lost wlan2 wlan2
		wan eth1 eth1
	EOF
	run_init start || return 1
	assert_lines "firewall rules" "$RULE_PREFIX src=mesh device=bat0 $RULE_SUFFIX
$RULE_PREFIX src=community device=br-olsr $RULE_SUFFIX
$RULE_PREFIX src=freifunk device=wlan1 $RULE_SUFFIX" "$(firewall_rules)" || return 1
	local log
	log="$(cat "$T/procd.log")"
	assert_contains "log of the zoneless network" "mesh network 'lost' is in no firewall zone" "$log" &&
		assert_contains "log of the down network" "network 'later' has no device yet" "$log" &&
		assert_not_contains "json outside procd's data" "(not for procd)" "$log"
}

# A mesh network in wan (no zone of its own): the rule is for the mesh device only, so
# the relay port stays closed on the WAN itself.
test_init_mesh_in_wan_opens_the_mesh_device_only_with_standin() {
	linkpool_config <<-'EOF'
		config gateway 'main'
			option enabled '1'
			option bundle 'LP1:bWVtYmVyID0gYWxpY2UK'
			list lan_network 'lan'
			list mesh_network 'mesh'

		config uplink 'wan'
			option network 'wan'
	EOF
	uci_t add_list firewall.@zone[1].network=mesh && uci_t commit firewall || return 1
	netstate <<-'EOF'
		lan br-lan br-lan
		mesh wlan0-mesh wlan0-mesh
		wan eth1 eth1
	EOF
	run_init start || return 1
	assert_lines "firewall rules" "$RULE_PREFIX src=wan device=wlan0-mesh $RULE_SUFFIX" "$(firewall_rules)"
}

# No mesh network, or linkpool not started: no firewall data at all (the firewall is
# still told to reload: a mesh network removed from the config takes its rule along).
test_init_no_mesh_no_firewall_rule_with_standin() {
	linkpool_config <<-'EOF'
		config gateway 'main'
			option enabled '1'
			option bundle 'LP1:bWVtYmVyID0gYWxpY2UK'
			list lan_network 'lan'

		config uplink 'wan'
			option network 'wan'
	EOF
	mesh_zone
	netstate <<-'EOF'
		lan br-lan br-lan
		mesh bat0 bat0
		wan eth1 eth1
	EOF
	run_init start || return 1
	local calls
	calls="$(procd_calls)"
	assert_contains "started" "procd_open_instance" "$calls" &&
		assert_not_contains "no mesh" "procd_open_data" "$calls" &&
		assert_not_contains "no mesh" "json_" "$calls" &&
		assert_contains "firewall told" "procd_set_config_changed [firewall]" "$calls" || return 1

	uci_t add_list linkpool.main.mesh_network=mesh && uci_t set linkpool.main.enabled=0 &&
		uci_t commit linkpool || return 1
	: >"$T/procd.log"
	run_init start || return 1
	calls="$(procd_calls)"
	assert_not_contains "disabled" "procd_open_data" "$calls" &&
		assert_not_contains "disabled" "json_" "$calls"
}

# Stopping tells the firewall to reload, before procd deletes the service (and with it
# the rule): the firewall's reload trigger waits a second.
test_init_stop_tells_the_firewall_with_standin() {
	cp "$SHIPPED_CONFIG" "$T/config/linkpool"
	run_init stop || return 1
	assert_lines "procd calls" "procd_set_config_changed [firewall]
procd_kill [linkpool.init]" "$(procd_calls)"
}

# The rule only uses keys fw4 takes from a service (parse_rule in fw4.uc; `type` picks
# the parser; an unknown key is warned about and ignored, which would widen the rule),
# and its port is the one the daemon listens on (RELAY_PORT in gateway/src/config.rs).
test_init_firewall_rule_speaks_fw4_with_standin() {
	linkpool_config <<-'EOF'
		config gateway 'main'
			option enabled '1'
			option bundle 'LP1:bWVtYmVyID0gYWxpY2UK'
			list mesh_network 'mesh'

		config uplink 'wan'
			option network 'wan'
	EOF
	mesh_zone
	netstate <<-'EOF'
		mesh bat0 bat0
		wan eth1 eth1
	EOF
	run_init start || return 1
	local fw4_keys word key known port rules
	fw4_keys="type enabled name _name family src dest device direction ipset helper set_helper
		proto src_ip src_mac src_port dest_ip dest_port icmp_type extra limit limit_burst
		utc_time start_date stop_date start_time stop_time weekdays monthdays mark set_mark
		set_xmark dscp set_dscp counter log log_limit target"
	rules="$(firewall_rules)"
	[ -n "$rules" ] || {
		echo "    no firewall rule"
		return 1
	}
	for word in $rules; do
		key="${word%%=*}"
		known=0
		for k in $fw4_keys; do
			[ "$k" = "$key" ] && known=1
		done
		[ "$known" = 1 ] || {
			echo "    key '$key' is not one fw4 reads from a service rule"
			return 1
		}
	done
	port="$(sed -n 's/^pub const RELAY_PORT: u16 = \([0-9]*\);$/\1/p' "$here/../../gateway/src/config.rs")"
	assert_contains "RELAY_PORT in gateway/src/config.rs" "dest_port=$port " "$rules " &&
		assert_contains "port" "dest_port=7118" "$rules"
}

# --- uci-defaults --------------------------------------------------------------------

# The firewall zone's section name whose option name is $1 (first one).
zone_named() {
	local i=0 name
	while uci_t -q get "firewall.@zone[$i]" >/dev/null; do
		name="$(uci_t -q get "firewall.@zone[$i].name")"
		[ "$name" = "$1" ] && {
			echo "@zone[$i]"
			return 0
		}
		i=$((i + 1))
	done
	return 1
}

# How many forwardings from $1 to $2 exist.
forwardings() {
	local i=0 n=0
	while uci_t -q get "firewall.@forwarding[$i]" >/dev/null; do
		[ "$(uci_t -q get "firewall.@forwarding[$i].src")" = "$1" ] &&
			[ "$(uci_t -q get "firewall.@forwarding[$i].dest")" = "$2" ] && n=$((n + 1))
		i=$((i + 1))
	done
	echo "$n"
}

test_uci_defaults_creates_interface_and_zone_with_standin() {
	cp "$SHIPPED_CONFIG" "$T/config/linkpool"
	run_uci_defaults || {
		echo "    uci-defaults exited non-zero"
		return 1
	}
	assert_eq "network.linkpool" "interface" "$(uci_t -q get network.linkpool)" &&
		assert_eq "proto" "none" "$(uci_t -q get network.linkpool.proto)" &&
		assert_eq "device" "linkpool0" "$(uci_t -q get network.linkpool.device)" || return 1
	local zone
	zone="$(zone_named linkpool)" || {
		echo "    no firewall zone named linkpool"
		return 1
	}
	assert_eq "zone network" "linkpool" "$(uci_t -q get "firewall.$zone.network")" &&
		assert_eq "zone masq" "0" "$(uci_t -q get "firewall.$zone.masq")" &&
		assert_eq "zone mtu_fix" "1" "$(uci_t -q get "firewall.$zone.mtu_fix")" &&
		assert_eq "zone input" "REJECT" "$(uci_t -q get "firewall.$zone.input")" &&
		assert_eq "zone forward" "REJECT" "$(uci_t -q get "firewall.$zone.forward")" &&
		assert_eq "lan -> linkpool forwardings" "1" "$(forwardings lan linkpool)" &&
		assert_eq "lan -> wan forwarding kept" "1" "$(forwardings lan wan)" &&
		assert_eq "wan zone untouched" "1" "$(uci_t -q get "firewall.$(zone_named wan).masq")" || return 1
	# Committed, not just staged: the files themselves hold the new sections.
	assert_contains "committed network file" "config interface 'linkpool'" "$(cat "$T/config/network")" &&
		assert_contains "committed firewall file" "config zone 'linkpool'" "$(cat "$T/config/firewall")"
}

test_uci_defaults_twice_is_idempotent_with_standin() {
	cp "$SHIPPED_CONFIG" "$T/config/linkpool"
	run_uci_defaults || return 1
	cp "$T/config/network" "$T/network.first"
	cp "$T/config/firewall" "$T/firewall.first"
	run_uci_defaults || {
		echo "    second run exited non-zero"
		return 1
	}
	assert_lines "network after two runs" "$(cat "$T/network.first")" "$(cat "$T/config/network")" &&
		assert_lines "firewall after two runs" "$(cat "$T/firewall.first")" "$(cat "$T/config/firewall")"
}

test_uci_defaults_leaves_user_edits_alone_with_standin() {
	cp "$SHIPPED_CONFIG" "$T/config/linkpool"
	run_uci_defaults || return 1
	# The user turns MSS clamping off, drops the forwarding and renames the device...
	uci_t set firewall.linkpool.mtu_fix=0 &&
		uci_t delete firewall.linkpool_lan &&
		uci_t set network.linkpool.device=tun9 &&
		uci_t commit firewall && uci_t commit network || return 1
	# ...then upgrades the package, which runs the script again.
	run_uci_defaults || return 1
	assert_eq "mtu_fix" "0" "$(uci_t -q get firewall.linkpool.mtu_fix)" &&
		assert_eq "lan -> linkpool forwardings" "0" "$(forwardings lan linkpool)" &&
		assert_eq "device" "tun9" "$(uci_t -q get network.linkpool.device)"
}

test_uci_defaults_uses_configured_device_with_standin() {
	linkpool_config <<-'EOF'
		config gateway 'main'
			option enabled '0'
			option device 'lp7'
			list lan_network 'lan'
	EOF
	run_uci_defaults || return 1
	assert_eq "device" "lp7" "$(uci_t -q get network.linkpool.device)"
}

test_uci_defaults_reuses_existing_zones_with_standin() {
	# The LAN is in a zone called 'inside', and the user already made a 'linkpool' zone.
	sed "s/option name 'lan'/option name 'inside'/; s/option src 'lan'/option src 'inside'/" \
		"$fixtures/firewall" >"$T/config/firewall"
	cat >>"$T/config/firewall" <<-'EOF'

		config zone
			option name 'linkpool'
			option input 'DROP'
	EOF
	cp "$SHIPPED_CONFIG" "$T/config/linkpool"
	run_uci_defaults || return 1
	local count
	count="$(grep -c "option name 'linkpool'" "$T/config/firewall")"
	assert_eq "zones named linkpool" "1" "$count" &&
		assert_eq "user's zone input kept" "DROP" "$(uci_t -q get "firewall.$(zone_named linkpool).input")" &&
		assert_eq "inside -> linkpool forwardings" "1" "$(forwardings inside linkpool)" &&
		assert_eq "lan -> linkpool forwardings" "0" "$(forwardings lan linkpool)"
}

# --- static checks -------------------------------------------------------------------

test_scripts_parse_with_sh_n() {
	local script ok=0
	for script in "$INIT" "$DEFAULTS"; do
		$SH -n "$script" || {
			echo "    $SH -n $script failed"
			ok=1
		}
	done
	return $ok
}

# --- runner --------------------------------------------------------------------------

run_one() { # NAME LABEL
	local name="$1" label="$2" out status
	setup
	out="$(
		"$name" 2>&1
	)"
	status=$?
	rm -rf "$T"
	if [ "$status" -eq 0 ]; then
		passed=$((passed + 1))
		echo "ok   $label"
	else
		failed=$((failed + 1))
		echo "FAIL $label"
		[ -n "$out" ] && printf '%s\n' "$out"
	fi
}

tests="$(sed -n 's/^\(test_[a-z0-9_]*\)() {$/\1/p' "$0")"

for shell_name in $TEST_SHELLS; do
	case "$shell_name" in
		busybox) SH="busybox sh" ;;
		*) SH="$shell_name" ;;
	esac
	if ! $SH -c 'true' 2>/dev/null; then
		failed=$((failed + 1))
		echo "FAIL shell '$shell_name' is not installed (apt-get install $shell_name)"
		continue
	fi
	for name in $tests; do
		case "$name" in *"$filter"*) ;; *) continue ;; esac
		run_one "$name" "${name#test_} [$shell_name]"
	done
done

# Lint as dash, the dialect closest to OpenWrt's ash that shellcheck knows; SC1091
# (sourced file not given) is expected: /lib/functions/network.sh exists only on routers.
lint_name=shellcheck
case "$lint_name" in *"$filter"*)
	if command -v shellcheck >/dev/null 2>&1; then
		if out="$(shellcheck -s dash -e SC1091 "$INIT" "$DEFAULTS" "$standin/rc.common" \
			"$standin/lib/functions.sh" "$standin/lib/functions/network.sh" \
			"$standin/lib/functions/procd.sh" "$0" 2>&1)"; then
			passed=$((passed + 1))
			echo "ok   shellcheck"
		else
			failed=$((failed + 1))
			echo "FAIL shellcheck"
			printf '%s\n' "$out"
		fi
	else
		failed=$((failed + 1))
		echo "FAIL shellcheck is not installed (apt-get install shellcheck)"
	fi
	;;
esac

# The daemon's own parser accepts the shipped config: disabled as shipped, and a working
# configuration once enabled with a bundle. Uses the host build of the gateway
# ($LINKPOOL_BIN, default target/debug/linkpool, which `cargo test` builds).
check_name=shipped_config_passes_linkpool_check_config
case "$check_name" in *"$filter"*)
	linkpool_bin="${LINKPOOL_BIN:-$here/../../target/debug/linkpool}"
	if [ ! -x "$linkpool_bin" ]; then
		failed=$((failed + 1))
		echo "FAIL $check_name: no $linkpool_bin (cargo build -p linkpool-gateway, or set LINKPOOL_BIN)"
	else
		setup
		problem=""
		out="$("$linkpool_bin" check-config --uci "$SHIPPED_CONFIG" --resolve lan=br-lan --resolve wan=eth1 2>&1)" ||
			problem="shipped config rejected: $out"
		case "$out" in *disabled*) ;; *) problem="${problem:-shipped config is not disabled: $out}" ;; esac
		sed -e "s/option enabled '0'/option enabled '1'/" \
			-e "s|option bundle ''|option bundle_file '$here/../../gateway/tests/data/member.bundle'|" \
			"$SHIPPED_CONFIG" >"$T/linkpool"
		out="$("$linkpool_bin" check-config --uci "$T/linkpool" --resolve lan=br-lan --resolve wan=eth1 2>&1)" ||
			problem="${problem:-enabled config rejected: $out}"
		case "$out" in *"LAN br-lan"*) ;; *) problem="${problem:-enabled config not understood: $out}" ;; esac
		# Spreading modes as `uci set` leaves them: a mode is accepted, a typo named.
		sed -i "s/option spread_bulk 'auto'/option spread_bulk 'session'/" "$T/linkpool"
		out="$("$linkpool_bin" check-config --uci "$T/linkpool" --resolve lan=br-lan --resolve wan=eth1 2>&1)" ||
			problem="${problem:-spread_bulk 'session' rejected: $out}"
		sed -i "s/option spread_bulk 'session'/option spread_bulk 'fast'/" "$T/linkpool"
		if out="$("$linkpool_bin" check-config --uci "$T/linkpool" --resolve lan=br-lan --resolve wan=eth1 2>&1)"; then
			problem="${problem:-spread_bulk 'fast' accepted: $out}"
		fi
		case "$out" in *"key \`linkpool.main.spread_bulk\`: unknown flow mode \`fast\` (expected auto, session, packet or redundant)"*) ;;
		*) problem="${problem:-spread_bulk 'fast' not named: $out}" ;;
		esac
		rm -rf "$T"
		if [ -z "$problem" ]; then
			passed=$((passed + 1))
			echo "ok   $check_name"
		else
			failed=$((failed + 1))
			echo "FAIL $check_name"
			echo "    $problem"
		fi
	fi
	;;
esac

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
