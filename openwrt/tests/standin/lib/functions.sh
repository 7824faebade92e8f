# Stand-in for OpenWrt's /lib/functions.sh, for tests off the router: the UCI helpers
# linkpool's scripts use, written from their documented behaviour. As on OpenWrt,
# config_load evaluates `uci export` output (here from the stand-in uci in ../bin).
# shellcheck shell=dash disable=SC2034

append() {
	local var="$1" value="$2" sep="${3:- }"
	eval "$var=\"\${$var:+\${$var}\$sep}\$value\""
}

# `uci export` starts with "package NAME", which config_load evaluates too.
package() {
	return 0
}

config_set() {
	export "CONFIG_${1}_${2}=$3"
}

config() {
	CONFIG_NUM_SECTIONS=$((CONFIG_NUM_SECTIONS + 1))
	CONFIG_SECTION="${2:-cfg$CONFIG_NUM_SECTIONS}"
	append CONFIG_SECTIONS "$CONFIG_SECTION"
	config_set "$CONFIG_SECTION" TYPE "$1"
}

option() {
	local name="$1"
	shift
	config_set "$CONFIG_SECTION" "$name" "$*"
}

list() {
	local name="$1" len
	shift
	config_get len "$CONFIG_SECTION" "${name}_LENGTH" 0
	[ "$len" = 0 ] && append CONFIG_LIST_STATE "${CONFIG_SECTION}_${name}"
	len=$((len + 1))
	config_set "$CONFIG_SECTION" "${name}_ITEM$len" "$*"
	config_set "$CONFIG_SECTION" "${name}_LENGTH" "$len"
	append "CONFIG_${CONFIG_SECTION}_${name}" "$*" " "
}

config_load() {
	local state
	for state in $CONFIG_LIST_STATE; do
		unset "CONFIG_${state}" "CONFIG_${state}_LENGTH"
	done
	CONFIG_LIST_STATE=""
	CONFIG_SECTIONS=""
	CONFIG_NUM_SECTIONS=0
	CONFIG_SECTION=""
	local exported
	exported="$(uci -q export "$1")" || return 1
	eval "$exported"
}

# config_get VAR SECTION OPTION [DEFAULT]  or  config_get SECTION OPTION (prints)
config_get() {
	case "$3" in
		"") eval "echo \"\${CONFIG_${1}_${2}:-\${4}}\"" ;;
		*) eval "export -- \"$1=\${CONFIG_${2}_${3}:-\${4}}\"" ;;
	esac
}

config_get_bool() {
	local _tmp
	config_get _tmp "$2" "$3" "$4"
	case "$_tmp" in
		1 | on | true | yes | enabled) _tmp=1 ;;
		0 | off | false | no | disabled) _tmp=0 ;;
		*) _tmp="$4" ;;
	esac
	export -- "$1=$_tmp"
}

config_foreach() {
	local callback="$1" type="$2" section stype
	shift 2
	for section in $CONFIG_SECTIONS; do
		config_get stype "$section" TYPE
		[ -n "$type" ] && [ "$stype" != "$type" ] && continue
		"$callback" "$section" "$@"
	done
}

config_list_foreach() {
	local section="$1" name="$2" callback="$3" len i value
	shift 3
	config_get len "$section" "${name}_LENGTH" 0
	i=1
	while [ "$i" -le "$len" ]; do
		config_get value "$section" "${name}_ITEM$i"
		"$callback" "$value" "$@"
		i=$((i + 1))
	done
}
