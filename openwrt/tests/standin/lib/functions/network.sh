# Stand-in for OpenWrt's /lib/functions/network.sh. netifd's view of the networks comes
# from $STANDIN_NETWORK_STATE: lines "NETWORK L3_DEVICE PHYS_DEVICE" for networks that
# are up; a network missing from it is down (as with ubus, the variable is emptied and
# the function fails).
# shellcheck shell=dash

__standin_network_field() {
	local var="$1" network="$2" field="$3" value
	value="$(awk -v n="$network" -v f="$field" '$1 == n { print $f; exit }' "$STANDIN_NETWORK_STATE" 2>/dev/null)"
	export -- "$var=$value"
	[ -n "$value" ]
}

network_get_device() { __standin_network_field "$1" "$2" 2; }
network_get_physdev() { __standin_network_field "$1" "$2" 3; }
network_is_up() {
	local _dev
	__standin_network_field _dev "$1" 2
}
