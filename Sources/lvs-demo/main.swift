import Foundation
import LVSLab

#if canImport(Glibc)
import Glibc
#endif

/// The demo (`lvsadm demo` runs this program, which sits next to it): a
/// client, a router, lvsd and three real servers in network namespaces.
let me = URL(fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0])
exit(Demo.run(bin: me.deletingLastPathComponent()))
