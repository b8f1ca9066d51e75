using Drydock.Hypervisor;
using Drydock.Hypervisor.Libvirt;
using Drydock.Hypervisor.Qemu;
using Drydock.Hypervisor.Virtuozzo;

namespace Drydock.SiloHost.Cli;

/// <summary>
/// Turns a <c>--hypervisor</c> URI into a driver: the scheme before the first colon picks the driver, the rest is its
/// address. <c>libvirt:qemu:///system</c>, <c>qemu:unix:/run/vm1/qmp.sock</c> (or <c>qemu:/run/vm1/qmp.sock</c>),
/// <c>virtuozzo:qemu:///system</c>; <c>sim:HOST</c> only where a simulated fleet exists (the demo, tests).
/// </summary>
internal sealed class HypervisorConnectors
{
    private readonly Dictionary<string, IHypervisorConnector> _connectors = new(StringComparer.Ordinal);

    /// <summary>The drivers of a real host: libvirt, QEMU (QMP) and Virtuozzo.</summary>
    /// <param name="workDirectory">Where captures put their sockets and scratch files.</param>
    /// <returns>The registry.</returns>
    public static HypervisorConnectors CreateDefault(string workDirectory)
    {
        var connectors = new HypervisorConnectors();
        connectors.Add(new LibvirtConnector(new LibvirtDriverOptions
        {
            SocketDirectory = Path.Combine(workDirectory, "nbd"),
            ScratchDirectory = Path.Combine(workDirectory, "scratch"),
        }));
        connectors.Add(new QemuConnector());
        connectors.Add(new VirtuozzoConnector(new VirtuozzoDriverOptions { FleeceDirectory = Path.Combine(workDirectory, "fleece") }));
        return connectors;
    }

    /// <summary>Adds or replaces the connector of a scheme.</summary>
    /// <param name="connector">The connector.</param>
    /// <returns>This registry.</returns>
    public HypervisorConnectors Add(IHypervisorConnector connector)
    {
        _connectors[connector.Scheme] = connector;
        return this;
    }

    /// <summary>Connects to the hypervisor a URI names.</summary>
    /// <param name="uri">SCHEME:ADDRESS.</param>
    /// <param name="cancellationToken">Cancels the connection.</param>
    /// <returns>The driver.</returns>
    /// <exception cref="ArgumentException">The URI names no known driver.</exception>
    public Task<IHypervisorDriver> ConnectAsync(string uri, CancellationToken cancellationToken)
    {
        var colon = uri.IndexOf(':', StringComparison.Ordinal);
        var scheme = colon > 0 ? uri[..colon] : uri;
        if (!_connectors.TryGetValue(scheme, out var connector))
        {
            var known = string.Join(", ", _connectors.Keys.Order(StringComparer.Ordinal).Select(k => k + ":"));
            throw new ArgumentException(scheme == "sim"
                ? $"--hypervisor '{uri}': simulated hypervisors exist only inside 'drydock demo' and the tests; use one of {known}"
                : $"--hypervisor '{uri}': unknown driver '{scheme}'; use one of {known}");
        }

        return connector.ConnectAsync(colon > 0 ? uri[(colon + 1)..] : "", cancellationToken);
    }

    private sealed class VirtuozzoConnector(VirtuozzoDriverOptions template) : IHypervisorConnector
    {
        public string Scheme => VirtuozzoDriver.DriverName;

        public async Task<IHypervisorDriver> ConnectAsync(string address, CancellationToken cancellationToken = default)
        {
            var options = new VirtuozzoDriverOptions
            {
                Uri = string.IsNullOrEmpty(address) ? template.Uri : address,
                FleeceDirectory = template.FleeceDirectory,
            };
            var api = await NativeVirtuozzoBackupApi.ConnectAsync(options, cancellationToken);
            return new VirtuozzoDriver(api, options);
        }
    }
}
