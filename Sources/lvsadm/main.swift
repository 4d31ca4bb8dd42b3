#if canImport(Glibc)
import Glibc
#endif
import Foundation
import LVSControl
import LVSLab

/// lvsadm: ipvsadm's command line against lvsd; `lvsadm demo` shows it all.
let program = CommandLine.arguments.first.map { String($0.split(separator: "/").last ?? "lvsadm") } ?? "lvsadm"
let arguments = Array(CommandLine.arguments.dropFirst())
if arguments.first == "demo" {
    // lvsd and lvs-realserver sit next to lvsadm.
    let me = URL(fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0])
    exit(Demo.run(bin: me.deletingLastPathComponent()))
}
exit(Admin(program: program).run(arguments))
