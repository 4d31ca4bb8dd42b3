import LVSAdmin
import LVSSystem

#if canImport(Glibc)
import Glibc
#endif

/// lvsadm: ipvsadm's command line against lvsd. `lvsadm demo` runs the
/// demo, `lvs-demo` beside lvsadm, so that lvsadm itself links no test lab.
let program = CommandLine.arguments.first.map { String($0.split(separator: "/").last ?? "lvsadm") } ?? "lvsadm"
let arguments = Array(CommandLine.arguments.dropFirst())
if arguments.first == "demo" {
    let demo = ExecutablePath.sibling("lvs-demo")
    let error = ChildProcess.replaceProcess(with: demo, Array(arguments.dropFirst()))
    StandardStream.error.write("\(program) demo: cannot run \(demo): \(error)\n")
    exit(1)
}
exit(Admin(program: program).run(arguments))
