import LVSCore
import LVSPacket

extension Invocation {
    /// The table operation this command line asks for, if it is one.
    public func operations() -> [TableOperation]? {
        switch command {
        case .addService: service.map { [.addService($0)] }
        case .editService: service.map { [.editService($0)] }
        case .deleteService: service.map { [.deleteService($0.key)] }
        case .flush: [.clear]
        case .addServer: service.flatMap { s in server.map { [.addServer(s.key, $0)] } }
        case .editServer: service.flatMap { s in server.map { [.editServer(s.key, $0)] } }
        case .deleteServer: service.flatMap { s in server.map { [.deleteServer(s.key, address: $0.address, port: $0.port)] } }
        case .setTimeouts: [.setTimeouts(tcp: timeouts.tcp, tcpFin: timeouts.tcpFin, udp: timeouts.udp)]
        case .addLocalAddress: service.flatMap { s in localAddress.map { [.addLocalAddress(s.key, $0)] } }
        case .deleteLocalAddress: service.flatMap { s in localAddress.map { [.deleteLocalAddress(s.key, $0)] } }
        default: nil
        }
    }
}
