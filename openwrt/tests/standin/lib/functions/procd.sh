# Stand-in for OpenWrt's /lib/functions/procd.sh: every procd_* call is recorded in
# $STANDIN_PROCD_LOG, one line per call, each argument in brackets so argument
# boundaries can be asserted.
#
# procd.sh sources jshn.sh; an init script adds its own JSON to procd's message between
# procd_open_data and procd_close_data (which switch jshn to procd's namespace and open
# and close the "data" object: firewall rules for fw4, mDNS services). The json_*
# functions below record their calls the same way; one made outside that namespace would
# not reach procd on OpenWrt, and is recorded with a "(not for procd)" mark.
# shellcheck shell=dash

__standin_procd_record() {
	local line="$1" arg
	shift
	for arg in "$@"; do
		line="$line [$arg]"
	done
	echo "$line" >>"$STANDIN_PROCD_LOG"
}

procd_open_service() { __standin_procd_record procd_open_service "$@"; }
procd_close_service() { __standin_procd_record procd_close_service "$@"; }
procd_open_instance() { __standin_procd_record procd_open_instance "$@"; }
procd_close_instance() { __standin_procd_record procd_close_instance "$@"; }
procd_set_param() { __standin_procd_record procd_set_param "$@"; }
procd_append_param() { __standin_procd_record procd_append_param "$@"; }
procd_open_trigger() { __standin_procd_record procd_open_trigger "$@"; }
procd_close_trigger() { __standin_procd_record procd_close_trigger "$@"; }
procd_add_reload_trigger() { __standin_procd_record procd_add_reload_trigger "$@"; }
procd_add_interface_trigger() { __standin_procd_record procd_add_interface_trigger "$@"; }
procd_add_reload_interface_trigger() { __standin_procd_record procd_add_reload_interface_trigger "$@"; }
procd_set_config_changed() { __standin_procd_record procd_set_config_changed "$@"; }
procd_kill() { __standin_procd_record procd_kill "$@"; }

__standin_procd_data_open=0
procd_open_data() {
	__standin_procd_record procd_open_data "$@"
	__standin_procd_data_open=1
}
procd_close_data() {
	__standin_procd_record procd_close_data "$@"
	__standin_procd_data_open=0
}

__standin_json_record() {
	local call="$1"
	shift
	[ "$__standin_procd_data_open" = 1 ] || call="$call (not for procd)"
	__standin_procd_record "$call" "$@"
}
json_add_array() { __standin_json_record json_add_array "$@"; }
json_close_array() { __standin_json_record json_close_array "$@"; }
json_add_object() { __standin_json_record json_add_object "$@"; }
json_close_object() { __standin_json_record json_close_object "$@"; }
json_add_string() { __standin_json_record json_add_string "$@"; }
json_add_int() { __standin_json_record json_add_int "$@"; }
json_add_boolean() { __standin_json_record json_add_boolean "$@"; }

logger() { __standin_procd_record logger "$@"; }
