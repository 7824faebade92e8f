# Stand-in for OpenWrt's /lib/functions/procd.sh: every procd_* call is recorded in
# $STANDIN_PROCD_LOG, one line per call, each argument in brackets so argument
# boundaries can be asserted.
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

logger() { __standin_procd_record logger "$@"; }
