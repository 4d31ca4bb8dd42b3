import ArgumentParser
import Dispatch
#if canImport(Glibc)
import Glibc
#endif
import LVSControl
import Logging

@main
struct LVSD: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lvsd",
        abstract: "The swift-lvs director: virtual services, real servers, connections, in userspace.",
        discussion: "Runs in the foreground. SIGTERM or SIGINT stop it, SIGHUP reloads the --rules and --keepalived files (all or nothing).")

    @Option(help: "The control socket lvsadm talks to (mode 0600).")
    var socket = "/run/lvsd.sock"

    @Option(help: ArgumentHelp("An ipvsadm rules file (the `ipvsadm -S` format) to load; repeatable.", valueName: "file"))
    var rules: [String] = []

    @Option(help: ArgumentHelp("A keepalived.conf whose virtual_server blocks to load; repeatable.", valueName: "file"))
    var keepalived: [String] = []

    @Option(help: "Connections the table holds (56 bytes each for IPv4, plus the index).")
    var connectionTableSize = 1 << 20

    @Option(help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel = "info"

    mutating func run() throws {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
        let logger = Logger(label: "lvsd")
        let plane = ControlPlane(capacity: connectionTableSize, sources: ConfigurationSources(rules: rules, keepalived: keepalived), logger: logger)
        do {
            try plane.reload()
        } catch {
            logger.critical("cannot load the configuration: \(error)")
            throw ExitCode(1)
        }
        let server: ControlServer
        do {
            server = try ControlServer(path: socket, logger: logger) { plane.handle($0) }
        } catch {
            logger.critical("cannot serve the control socket: \(error)")
            throw ExitCode(1)
        }
        server.start()
        logger.info("serving", metadata: ["socket": "\(socket)", "connections": "\(connectionTableSize)"])

        let stop = DispatchSemaphore(value: 0)
        let signals = DispatchQueue(label: "lvsd.signals")
        var sources: [DispatchSourceSignal] = []
        for sig in [SIGTERM, SIGINT, SIGHUP] {
            signal(sig, SIG_IGN)
            let s = DispatchSource.makeSignalSource(signal: sig, queue: signals)
            s.setEventHandler {
                if sig == SIGHUP {
                    logger.info("SIGHUP: reloading")
                    do { try plane.reload() } catch { logger.error("reload refused, nothing changed: \(error)") }
                } else {
                    logger.info("\(sig == SIGTERM ? "SIGTERM" : "SIGINT"): stopping")
                    stop.signal()
                }
            }
            s.resume()
            sources.append(s)
        }
        let timer = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "lvsd.tick"))
        timer.schedule(deadline: .now(), repeating: .milliseconds(100))
        timer.setEventHandler { plane.tick() }
        timer.resume()

        stop.wait()
        timer.cancel()
        server.stop()
        logger.info("stopped")
        _ = sources
    }
}
