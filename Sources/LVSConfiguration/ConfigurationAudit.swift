/// A keyword of a keepalived.conf that lvsd reads and does not act on, and
/// why. `unsupported`: the file asks for a behaviour lvsd does not have
/// (`lvsd --check-config` then exits non-zero); otherwise the keyword has
/// no effect on what a director does (an identifier, a timing of gratuitous
/// ARPs), and is listed all the same: nothing is ignored in silence.
public struct ConfigurationNotice: Sendable, Hashable, Codable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var keyword: String
    public var reason: String
    public var unsupported: Bool

    public var description: String {
        "\(file):\(line): \(keyword): \(unsupported ? "not supported" : "ignored"): \(reason)"
    }
}

/// What lvsd does with each keyword of a keepalived.conf, block by block:
/// the keywords it acts on, those it ignores as harmless (with why), and
/// those whose behaviour it does not have (with what happens instead).
/// Anything else is unknown to it, and unsupported.
enum KeepalivedAudit {
    typealias Rules = (acted: Set<String>, harmless: [String: String], unsupported: [String: String])
    static let garp = "gratuitous ARP timing is lvsd's own"
    static let noMail = "lvsd sends no e-mail"
    static let priorities = "process priorities are not configurable"

    static let top: Rules = (
        [
            "virtual_server", "virtual_server_group", "local_address_group", "vrrp_instance", "global_defs", "track_file", "vrrp_track_file",
            "vrrp_script", "vrrp_sync_group", "vrrp_track_process",
        ],
        [:],
        [
            "static_ipaddress": "lvsd adds no addresses of its own", "static_routes": "lvsd adds no routes of its own",
            "static_rules": "lvsd adds no rules of its own", "include": "not followed: the file it names is not read",
            "linkbeat_interfaces": "not watched",
        ]
    )

    static let globalDefinitions: Rules = (
        ["lvs_timeouts", "lvs_sync_daemon", "vrrp_version"],
        [
            "router_id": "an identifier for e-mail and logs", "lvs_id": "an identifier for e-mail and logs",
            "notification_email": "lvsd sends no e-mail (smtp_alert asks for it)", "notification_email_from": noMail,
            "smtp_server": noMail, "smtp_connect_timeout": noMail, "smtp_helo_name": noMail,
            "enable_script_security": "scripts run as lvsd's user", "script_user": "scripts run as lvsd's user",
            "vrrp_skip_check_adv_addr": "lvsd checks no advertisement's address list", "vrrp_strict": "lvsd already speaks plain RFC VRRP",
            "vrrp_garp_interval": garp, "vrrp_gna_interval": "neighbour advertisement timing is lvsd's own",
            "vrrp_garp_master_delay": garp, "vrrp_garp_master_repeat": garp,
            "vrrp_garp_master_refresh": garp, "vrrp_iptables": "lvsd installs its own nftables filter",
            "vrrp_no_swap": "memory locking is not configurable", "checker_no_swap": "memory locking is not configurable",
            "vrrp_priority": priorities, "checker_priority": priorities,
            "max_auto_priority": priorities, "dynamic_interfaces": "interfaces are followed anyway",
        ],
        ["notify_fifo": "no FIFO is written", "vrrp_notify_fifo": "no FIFO is written", "lvs_notify_fifo": "no FIFO is written"]
    )

    static let virtualServer: Rules = (
        [
            "lvs_sched", "lb_algo", "lvs_method", "lb_kind", "protocol", "real_server", "flag-1", "flag-2", "flag-3", "sh-fallback",
            "mh-fallback", "sh-port", "mh-port", "mh-sorted", "ops", "syn_proxy", "proxy_protocol", "persistence_timeout", "persistence_granularity",
            "persistence_engine", "sorry_server", "quorum", "hysteresis", "alpha", "omega", "inhibit_on_failure", "delay_loop",
            "laddr_group_name", "quorum_up", "quorum_down", "virtualhost",
        ],
        [:],
        [
            "sorry_server_inhibit": "the sorry server is added with its weight, not inhibited",
            "ha_suspend": "checks run whether or not the VIP is held", "smtp_alert": noMail, "lvs_flags": "not applied",
            "connect_timeout": checkerDefault, "retry": checkerDefault, "nb_get_retry": checkerDefault,
            "delay_before_retry": checkerDefault, "warmup": checkerDefault,
            "notify_up": "runs only in a real_server", "notify_down": "runs only in a real_server",
        ]
    )
    static let checkerDefault = "a checker default here is not used: set it in each checker"

    static let realServer: Rules = (
        Set(["weight", "uthreshold", "lthreshold", "lvs_method", "lb_kind", "inhibit_on_failure", "notify_up", "notify_down"]).union(checkers),
        [:],
        [
            "BFD_CHECK": notRun,
            "virtualhost": "a real_server's virtualhost is not used: set it in the checker or the virtual_server", "smtp_alert": noMail,
            "alpha": checkerDefault, "retry": checkerDefault, "nb_get_retry": checkerDefault, "delay_before_retry": checkerDefault,
            "warmup": checkerDefault, "connect_timeout": checkerDefault, "delay_loop": "the virtual_server's delay_loop is used",
        ]
    )
    static let notRun = "this checker is not run: the server stays in rotation unchecked"
    /// The checkers lvsd runs.
    static let checkers: Set<String> = [
        "TCP_CHECK", "HTTP_GET", "SSL_GET", "MISC_CHECK", "SMTP_CHECK", "DNS_CHECK", "UDP_CHECK", "PING_CHECK", "FILE_CHECK",
    ]

    static let checkerRules: Rules = (
        ["connect_ip", "connect_address", "connect_port", "connect_timeout", "retry", "nb_get_retry", "delay_before_retry", "warmup"],
        [:],
        [
            "bindto": "the source address is the kernel's choice",
            "bind_port": "the source port is the kernel's choice", "bind_if": "the interface is the kernel's choice",
            "fwmark": "the check is not marked", "alpha": "use the virtual_server's alpha",
            "tls_compliant": "not applied", "http_protocol": "HTTP/1.0 is sent",
            "user": "scripts run as lvsd's user",
        ]
    )
    static let httpChecker: Set<String> = ["url", "virtualhost", "enable_sni"]
    static let url: Rules = (
        ["path", "digest", "status_code", "virtualhost"], [:], ["regex": "not matched", "regex_no_match": "not matched"]
    )
    static let smtpChecker: Set<String> = ["helo_name", "host"]
    static let smtpHost: Rules = (
        ["connect_ip", "connect_address", "connect_port"], [:],
        ["bindto": "the source address is the kernel's choice", "bind_port": "the source port is the kernel's choice"]
    )
    static let dnsChecker: Set<String> = ["type", "name"]
    static let udpChecker: Set<String> = ["payload", "require_reply", "min_reply_length", "max_reply_length"]
    static let fileChecker: Set<String> = ["track_file", "weight"]
    static let syncGroup: Rules = (
        ["group", "notify_master", "notify_backup", "notify_fault", "notify"], [:],
        [
            "track_script": "a group's tracked scripts are not run: track them in its instances", "track_interface": "track them in its instances",
            "track_process": "track them in its instances", "track_file": "track them in its instances",
        ]
    )
    static let vrrpScript: Rules = (["script", "interval", "timeout", "weight", "rise", "fall", "user", "init_fail"], [:], [:])
    static let trackFile: Rules = (["file", "weight", "init_file"], [:], [:])
    static let trackProcess: Rules = (
        ["process", "param_match", "weight", "quorum", "quorum_max", "fork_delay", "terminate_delay", "delay", "full_command"], [:], [:]
    )
    static let miscChecker: Set<String> = ["misc_path", "misc_timeout", "misc_dynamic"]

    static let vrrpInstance: Rules = (
        [
            "state", "interface", "virtual_router_id", "priority", "advert_int", "virtual_ipaddress", "virtual_ipaddress_excluded",
            "nopreempt", "preempt_delay", "track_interface", "notify_master", "notify_backup", "notify_fault", "notify_stop", "notify", "version",
            "lvs_sync_daemon_interface", "authentication", "unicast_peer", "unicast_src_ip", "track_script", "track_process", "track_file",
        ],
        [
            "garp_master_delay": garp, "garp_master_repeat": garp,
            "garp_master_refresh": garp, "garp_lower_prio_delay": garp,
            "garp_lower_prio_repeat": garp, "debug": "lvsd's --log-level decides",
            "dont_track_primary": "lvsd watches the instance's interface", "accept": "lvsd answers for what it owns",
            "no_accept": "lvsd answers for what it owns", "skip_check_adv_addr": "lvsd checks no advertisement's address list",
            "strict_mode": "lvsd already speaks plain RFC VRRP", "native_ipv6": "IPv6 instances are version 3 anyway",
        ],
        [
            "track_bfd": "BFD is not spoken", "use_vmac": "the interface's own MAC is used",
            "vmac_xmit_base": "the interface's own MAC is used", "mcast_src_ip": "the interface's address is the source",
            "smtp_alert": noMail, "virtual_routes": "lvsd adds no routes", "virtual_rules": "lvsd adds no rules",
        ]
    )

    /// Every notice of one file's blocks.
    static func audit(_ blocks: [ConfigBlock], file: String) -> [ConfigurationNotice] {
        var out: [ConfigurationNotice] = []
        func check(_ b: ConfigBlock, _ rules: Rules) -> Bool {
            if rules.acted.contains(b.keyword) { return true }
            if let why = rules.harmless[b.keyword] {
                out.append(ConfigurationNotice(file: file, line: b.line, keyword: b.keyword, reason: why, unsupported: false))
            } else {
                let why =
                    rules.unsupported[b.keyword]
                    ?? (b.keyword.hasPrefix("@") ? "keepalived's conditional configuration is not evaluated" : "unknown to lvsd")
                out.append(ConfigurationNotice(file: file, line: b.line, keyword: b.keyword, reason: why, unsupported: true))
            }
            return false
        }
        func audit(checker k: ConfigBlock) {
            var rules = checkerRules
            switch k.keyword {
            case "HTTP_GET", "SSL_GET": rules.acted.formUnion(httpChecker)
            case "MISC_CHECK": rules.acted.formUnion(miscChecker)
            case "SMTP_CHECK": rules.acted.formUnion(smtpChecker)
            case "DNS_CHECK": rules.acted.formUnion(dnsChecker)
            case "UDP_CHECK": rules.acted.formUnion(udpChecker)
            case "FILE_CHECK": rules.acted.formUnion(fileChecker)
            default: break
            }
            for c in k.children where check(c, rules) && (c.keyword == "url" || c.keyword == "host") {
                for u in c.children { _ = check(u, c.keyword == "url" ? url : smtpHost) }
            }
        }
        for b in blocks where check(b, top) {
            switch b.keyword {
            case "global_defs":
                for c in b.children { _ = check(c, globalDefinitions) }
            case "track_file", "vrrp_track_file":
                for c in b.children { _ = check(c, trackFile) }
            case "vrrp_track_process":
                for c in b.children { _ = check(c, trackProcess) }
            case "vrrp_script":
                for c in b.children { _ = check(c, vrrpScript) }
            case "vrrp_sync_group":
                for c in b.children { _ = check(c, syncGroup) }
            case "virtual_server":
                for c in b.children where check(c, virtualServer) && c.keyword == "real_server" {
                    for k in c.children where check(k, realServer) && checkers.contains(k.keyword) {
                        audit(checker: k)
                    }
                }
            case "vrrp_instance":
                for c in b.children { _ = check(c, vrrpInstance) }
            default: break
            }
        }
        return out
    }
}

extension ConfigurationSources {
    /// What lvsd does not do of its keepalived.conf files (the files must
    /// load: a broken one throws, as for loading).
    public func notices() throws(ConfigurationError) -> [ConfigurationNotice] {
        var out: [ConfigurationNotice] = []
        for file in keepalived { out += KeepalivedAudit.audit(try KeepalivedConfiguration.tokenizeAndNest(try Self.read(file), file: file), file: file) }
        return out
    }

    /// `lvsd --check-config`, as `keepalived -t`: every file loads (the
    /// table, the checkers and the VRRP instances), then the notices.
    public func check() throws(ConfigurationError) -> [ConfigurationNotice] {
        _ = try load()
        _ = try loadHealth()
        _ = try loadHighAvailability()
        _ = try loadTrackFiles()
        _ = try loadMarks()
        return try notices()
    }
}
