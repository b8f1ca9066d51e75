using Drydock.Hypervisor.Contract;
using Xunit;

namespace Drydock.Hypervisor.Tests.Sim;

/// <summary>The end-to-end transfer suite against the simulator.</summary>
[Trait("Suite", "EndToEnd")]
public sealed class SimTransferTests : TransferContractTests
{
    protected override async Task<ContractHarness> CreateHarnessAsync(ContractDomainSpec spec, CancellationToken cancellationToken) =>
        await SimContractHarness.CreateAsync(spec, cancellationToken);
}
