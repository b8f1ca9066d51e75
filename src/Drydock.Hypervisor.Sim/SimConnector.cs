namespace Drydock.Hypervisor.Sim;

/// <summary>Opens drivers for <c>sim:HOST</c> URIs on one fleet.</summary>
/// <param name="fleet">The fleet.</param>
public sealed class SimConnector(SimFleet fleet) : IHypervisorConnector
{
    /// <inheritdoc/>
    public string Scheme => "sim";

    /// <inheritdoc/>
    public Task<IHypervisorDriver> ConnectAsync(string address, CancellationToken cancellationToken = default)
    {
        try
        {
            return Task.FromResult<IHypervisorDriver>(fleet.Host(address).Connect());
        }
        catch (ArgumentException ex)
        {
            throw new HypervisorConnectionException($"No simulated host '{address}' in the fleet.", innerException: ex);
        }
    }
}
