# bash completion for lvsadm (ipvsadm's options, plus lvsadm's own)
_lvsadm() {
    local cur prev
    cur="${COMP_WORDS[COMP_CWORD]}"
    prev="${COMP_WORDS[COMP_CWORD-1]}"
    if [ "${COMP_WORDS[1]}" = trace ]; then
        COMPREPLY=($(compgen -W "-t -u -f -6 --count --wait --json --socket" -- "$cur"))
        return
    fi
    case "$prev" in
        -s|--scheduler) COMPREPLY=($(compgen -W "rr wrr lc wlc lblc lblcr dh sh sed nq fo ovf mh twos ch" -- "$cur")); return ;;
        --tun-type) COMPREPLY=($(compgen -W "ipip gue" -- "$cur")); return ;;
        --start-daemon|--stop-daemon) COMPREPLY=($(compgen -W "master backup" -- "$cur")); return ;;
        --pe) COMPREPLY=($(compgen -W "sip" -- "$cur")); return ;;
        --socket) COMPREPLY=($(compgen -f -- "$cur")); return ;;
        -j|--synproxy) COMPREPLY=($(compgen -W "enable disable" -- "$cur")); return ;;
    esac
    COMPREPLY=($(compgen -W "-A -E -D -C -R -S -a -e -d -L -l -Z --set -h -v -t -u --sctp-service -f -6 -s -p -M --pe -b -o
        -r -g -i -m -w -x -y --tun-type --tun-port --tun-nocsum --tun-csum --tun-remcsum -n -c --timeout --daemon --stats
        --rate --thresholds --persistent-conn --tun-info --exact --sort --nosort --start-daemon --stop-daemon
        --mcast-interface --syncid --mcast-group --mcast-port --mcast-ttl --sync-maxlen --add-laddr --del-laddr --get-laddr
        -z -j --synproxy --drops --health --json --socket demo trace" -- "$cur"))
}
complete -F _lvsadm lvsadm
