using Xunit;

namespace Drydock.Hypervisor.Tests.Model;

public sealed class DiskHealthTests
{
    private static DiskHealth Disk(bool supports, params BitmapHealth[] bitmaps) => new()
    {
        Target = "vda",
        Identity = "id",
        VirtualSize = 1 << 20,
        SupportsCheckpoints = supports,
        Bitmaps = bitmaps,
    };

    [Fact]
    public void A_usable_bitmap_serves_as_base()
    {
        var disk = Disk(true, new BitmapHealth { Checkpoint = "drydock-1", Bitmap = "drydock-1", Usable = true });
        Assert.True(disk.CanServeAsBase("drydock-1", out var reason));
        Assert.Null(reason);
    }

    [Fact]
    public void Missing_inconsistent_or_unsupported_each_give_their_reason()
    {
        var inconsistent = Disk(true, new BitmapHealth { Checkpoint = "drydock-1", Bitmap = "drydock-1", Inconsistent = true, Usable = false, Problem = "inconsistent" });

        Assert.False(inconsistent.CanServeAsBase("drydock-1", out var reason));
        Assert.Equal(FullReadCode.BitmapInconsistent, reason!.Code);
        Assert.False(inconsistent.CanServeAsBase("drydock-2", out reason));
        Assert.Equal(FullReadCode.BitmapMissing, reason!.Code);
        Assert.False(Disk(false).CanServeAsBase("drydock-1", out reason));
        Assert.Equal(FullReadCode.CheckpointsUnsupported, reason!.Code);
    }
}
