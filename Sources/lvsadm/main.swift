#if canImport(Glibc)
import Glibc
#endif
import LVSControl

/// lvsadm: ipvsadm's command line against lvsd.
let program = CommandLine.arguments.first.map { String($0.split(separator: "/").last ?? "lvsadm") } ?? "lvsadm"
exit(Admin(program: program).run(Array(CommandLine.arguments.dropFirst())))
