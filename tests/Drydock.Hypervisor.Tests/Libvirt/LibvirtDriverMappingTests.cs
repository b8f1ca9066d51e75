using Drydock.Hypervisor.Libvirt;
using Drydock.Hypervisor.Libvirt.Xml;
using Xunit;

namespace Drydock.Hypervisor.Tests.Libvirt;

public sealed class LibvirtDriverMappingTests
{
    [Theory]
    [InlineData(0, 0, DomainEventKind.Defined)]
    [InlineData(1, 0, DomainEventKind.Undefined)]
    [InlineData(2, 0, DomainEventKind.Started)]
    [InlineData(2, 1, DomainEventKind.Migrated)]
    [InlineData(2, 3, DomainEventKind.Reverted)]
    [InlineData(3, 0, DomainEventKind.Paused)]
    [InlineData(4, 0, DomainEventKind.Resumed)]
    [InlineData(5, 0, DomainEventKind.Stopped)]
    [InlineData(5, 1, DomainEventKind.Stopped)]
    [InlineData(5, 2, DomainEventKind.Crashed)]
    [InlineData(5, 3, DomainEventKind.Migrated)]
    [InlineData(5, 5, DomainEventKind.Crashed)]
    [InlineData(5, 6, DomainEventKind.Reverted)]
    [InlineData(8, 0, DomainEventKind.Crashed)]
    public void Maps_libvirt_lifecycle_events(int type, int detail, DomainEventKind expected) =>
        Assert.Equal(expected, LibvirtEvents.MapLifecycle(type, detail));

    [Fact]
    public void Shutdown_in_progress_is_not_an_event() => Assert.Null(LibvirtEvents.MapLifecycle(6, 0));

    [Theory]
    [InlineData(1, 0, DomainState.Running)]
    [InlineData(3, 1, DomainState.Paused)]
    [InlineData(5, 1, DomainState.ShutOff)]
    [InlineData(5, 3, DomainState.Crashed)]
    [InlineData(6, 0, DomainState.Crashed)]
    [InlineData(0, 0, DomainState.Unknown)]
    public void Maps_libvirt_states(int state, int reason, DomainState expected) =>
        Assert.Equal(expected, LibvirtDriver.MapState((state, reason)));

    [Fact]
    public void Disk_identity_changes_with_the_source_and_is_stable_otherwise()
    {
        var disk = new LibvirtDisk("vda", "file", "qcow2", "/nonexistent/a.qcow2", 1, false, null);

        Assert.Equal(LibvirtDriver.DiskIdentity(disk), LibvirtDriver.DiskIdentity(disk with { SourceIndex = 7 }));
        Assert.NotEqual(LibvirtDriver.DiskIdentity(disk), LibvirtDriver.DiskIdentity(disk with { Source = "/nonexistent/b.qcow2" }));
        Assert.NotEqual(LibvirtDriver.DiskIdentity(disk), LibvirtDriver.DiskIdentity(disk with { Format = "raw" }));
    }
}
