namespace Drydock.Hypervisor;

/// <summary>
/// Opens drivers of one kind from a hypervisor URI's address, so that a host can map URIs such as
/// <c>libvirt:qemu:///system</c>, <c>qemu:unix:/run/vm1/qmp.sock</c> or <c>sim:fleet-1</c> to drivers without knowing
/// them. The composition root registers one connector per driver.
/// </summary>
public interface IHypervisorConnector
{
    /// <summary>The URI scheme this connector serves, e.g. <c>libvirt</c>, <c>qemu</c>, <c>sim</c>.</summary>
    string Scheme { get; }

    /// <summary>Connects to the hypervisor at <paramref name="address"/> (the URI after <c>SCHEME:</c>).</summary>
    /// <param name="address">Driver-specific address.</param>
    /// <param name="cancellationToken">Cancels the connection attempt.</param>
    /// <returns>A connected driver; dispose it to disconnect.</returns>
    /// <exception cref="HypervisorConnectionException">The hypervisor could not be reached.</exception>
    Task<IHypervisorDriver> ConnectAsync(string address, CancellationToken cancellationToken = default);
}
