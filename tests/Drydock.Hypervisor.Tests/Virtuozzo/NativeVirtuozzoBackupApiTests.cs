using Drydock.Hypervisor.Virtuozzo;
using Xunit;

namespace Drydock.Hypervisor.Tests.Virtuozzo;

public sealed class NativeVirtuozzoBackupApiTests
{
    [Fact]
    public async Task Stock_libvirt_has_no_virtuozzo_backup_api_and_says_so_before_connecting()
    {
        if (!File.Exists("/usr/lib/x86_64-linux-gnu/libvirt.so.0") && !File.Exists("/usr/lib/aarch64-linux-gnu/libvirt.so.0"))
        {
            Assert.Skip("libvirt.so.0 is not installed here (Debian package libvirt0).");
        }

        Assert.False(NativeVirtuozzoBackupApi.IsAvailable(out var missing));
        Assert.Contains("virDomainBlockSnapshotXCreateXML", missing);

        // A URI nothing listens on: the symbol check must fail first, without a connection attempt.
        var error = await Assert.ThrowsAsync<HypervisorNotSupportedException>(() =>
            VirtuozzoDriver.ConnectAsync(new VirtuozzoDriverOptions { Uri = "qemu+unix:///system?socket=/nonexistent" }, cancellationToken: TestContext.Current.CancellationToken));
        Assert.Contains("this libvirt has no Virtuozzo backup API", error.Message, StringComparison.Ordinal);
        Assert.Equal(VirtuozzoDriver.DriverName, error.Driver);
    }
}
