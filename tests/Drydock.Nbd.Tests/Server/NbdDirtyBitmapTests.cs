using Drydock.Nbd.Protocol;
using Drydock.Nbd.Server;
using FsCheck;
using FsCheck.Fluent;
using Xunit;
using static Drydock.Nbd.Tests.TestSupport.TestCancellation;

namespace Drydock.Nbd.Tests.Server;

public sealed class NbdDirtyBitmapTests
{
    private const uint Granularity = 4096;

    [Fact]
    public async Task Export_writes_are_recorded_only_while_the_bitmap_is_enabled()
    {
        var export = new NbdExport("disk", new NbdMemoryBackend(1 << 20));
        var bitmap = export.CreateBitmap("cbt", Granularity, enabled: false);

        await export.WriteAsync(0, new byte[10], cancellationToken: Ct);
        bitmap.Enable();
        await export.WriteAsync(10 * Granularity, new byte[10], cancellationToken: Ct);
        await export.WriteZeroesAsync(20 * Granularity, Granularity + 1, cancellationToken: Ct);
        await export.TrimAsync(30 * Granularity, 1, cancellationToken: Ct);
        bitmap.Disable();
        await export.WriteAsync(40 * Granularity, new byte[10], cancellationToken: Ct);

        Assert.Equal(
            [
                new NbdExtent(10 * Granularity, Granularity, NbdContexts.DirtyFlag),
                new NbdExtent(20 * Granularity, 2 * Granularity, NbdContexts.DirtyFlag),
                new NbdExtent(30 * Granularity, Granularity, NbdContexts.DirtyFlag),
            ],
            bitmap.GetDirtyRanges());
        Assert.Equal(4 * Granularity, bitmap.DirtyBytes);
        Assert.True(bitmap.IsDirty((10 * Granularity) + 4095));
        Assert.False(bitmap.IsDirty(11 * Granularity));
    }

    [Fact]
    public void Clear_makes_everything_clean_and_the_last_granule_is_clipped_to_the_size()
    {
        var export = new NbdExport("disk", new NbdMemoryBackend((10 * Granularity) + 512));
        var bitmap = export.CreateBitmap("cbt", Granularity);

        bitmap.MarkDirty(10 * Granularity, 1);
        Assert.Equal([new NbdExtent(0, 10 * Granularity, 0), new NbdExtent(10 * Granularity, 512, NbdContexts.DirtyFlag)], bitmap.GetExtents(0, ulong.MaxValue));

        bitmap.Clear();
        Assert.Equal([new NbdExtent(0, (10 * Granularity) + 512, 0)], bitmap.GetExtents(0, ulong.MaxValue));
    }

    [Fact]
    public void Extents_start_at_any_offset_and_stop_at_the_limit()
    {
        var export = new NbdExport("disk", new NbdMemoryBackend(1 << 20));
        var bitmap = export.CreateBitmap("cbt", Granularity);
        bitmap.MarkDirty(2 * Granularity, 2 * Granularity);
        bitmap.MarkDirty(6 * Granularity, Granularity);

        Assert.Equal(
            [new NbdExtent(100, (2 * Granularity) - 100, 0), new NbdExtent(2 * Granularity, 2 * Granularity, 1)],
            bitmap.GetExtents(100, 1 << 20, maxExtents: 2));
        Assert.Equal([new NbdExtent((3 * Granularity) + 7, 10, 1)], bitmap.GetExtents((3 * Granularity) + 7, 10));
    }

    [Fact]
    public void Bitmap_names_are_unique_and_bitmaps_can_be_removed()
    {
        var export = new NbdExport("disk", new NbdMemoryBackend(1 << 20));
        var first = export.CreateBitmap("a");

        Assert.Throws<InvalidOperationException>(() => export.CreateBitmap("a"));
        Assert.Same(first, export.FindBitmap("a"));
        Assert.True(export.RemoveBitmap("a"));
        Assert.False(export.RemoveBitmap("a"));
        Assert.Null(export.FindBitmap("a"));
        Assert.Empty(export.Bitmaps);
    }

    [Fact]
    public void Invalid_granularity_or_too_many_granules_are_refused_before_allocating()
    {
        var export = new NbdExport("disk", new NbdMemoryBackend(long.MaxValue));

        Assert.Throws<ArgumentOutOfRangeException>(() => export.CreateBitmap("a", 3000));
        Assert.Throws<ArgumentOutOfRangeException>(() => export.CreateBitmap("b", 256));
        Assert.Throws<ArgumentOutOfRangeException>(() => export.CreateBitmap("c", 65536));
    }

    [Fact]
    public void Random_marks_match_a_granule_model()
    {
        const int granules = 300;
        var ranges = Gen.Choose(0, (granules * (int)Granularity) - 1)
            .SelectMany(offset => Gen.Choose(0, 20_000).Select(length => (offset, Math.Min(length, (granules * (int)Granularity) - offset))));
        var property = Prop.ForAll(Arb.From(Gen.ListOf(ranges)), marks =>
        {
            var export = new NbdExport("disk", new NbdMemoryBackend(granules * Granularity));
            var bitmap = export.CreateBitmap("cbt", Granularity);
            var model = new bool[granules];
            foreach (var (offset, length) in marks)
            {
                bitmap.MarkDirty((ulong)offset, (ulong)length);
                for (var g = offset / (int)Granularity; length > 0 && g <= (offset + length - 1) / (int)Granularity; g++)
                {
                    model[g] = true;
                }
            }

            var extents = bitmap.GetExtents(0, ulong.MaxValue);
            var at = 0UL;
            foreach (var extent in extents)
            {
                if (extent.Offset != at)
                {
                    return false;
                }

                for (var g = extent.Offset / Granularity; g < extent.End / Granularity; g++)
                {
                    if (model[g] != extent.IsDirty)
                    {
                        return false;
                    }
                }

                at = extent.End;
            }

            return at == granules * Granularity && extents.Zip(extents.Skip(1)).All(pair => pair.First.Flags != pair.Second.Flags);
        });

        Check.One(Config.QuickThrowOnFailure.WithMaxTest(300), property);
    }
}
