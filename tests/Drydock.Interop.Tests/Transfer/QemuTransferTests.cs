using Drydock.Hypervisor.Contract;
using Drydock.Interop.Tests.Hypervisor;
using Xunit;

namespace Drydock.Interop.Tests.Transfer;

/// <summary>The end-to-end transfer suite against a real qemu-storage-daemon (the QEMU driver over QMP).</summary>
[Trait("Suite", "EndToEnd")]
public sealed class QemuTransferTests : TransferContractTests
{
    protected override async Task<ContractHarness> CreateHarnessAsync(ContractDomainSpec spec, CancellationToken cancellationToken) =>
        await QemuContractHarness.CreateAsync(spec, cancellationToken);
}
