using Drydock.Hypervisor.Contract;
using Drydock.Interop.Tests.Hypervisor.Libvirt;
using Drydock.TestKit.Libvirt;
using Xunit;

namespace Drydock.Interop.Tests.Transfer;

/// <summary>The end-to-end transfer suite against real libvirt 9.0 + QEMU 7.2 (TCG), in the libvirt collection (one
/// daemon per machine).</summary>
[Trait("Suite", "EndToEnd")]
[Collection(LibvirtCollection.Name)]
public sealed class LibvirtTransferTests(LibvirtFixture fixture) : TransferContractTests
{
    protected override async Task<ContractHarness> CreateHarnessAsync(ContractDomainSpec spec, CancellationToken cancellationToken) =>
        await LibvirtContractHarness.StartAsync(fixture, spec, cancellationToken);
}
