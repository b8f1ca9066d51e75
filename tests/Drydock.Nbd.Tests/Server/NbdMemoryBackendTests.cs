using Drydock.Nbd.Protocol;
using Drydock.Nbd.Server;
using FsCheck;
using FsCheck.Fluent;
using Xunit;
using static Drydock.Nbd.Tests.TestSupport.TestCancellation;

namespace Drydock.Nbd.Tests.Server;

public sealed class NbdMemoryBackendTests
{
    private const int Size = 64 * 1024;
    private const int Page = 512;
    private const uint HoleFlags = (uint)(NbdAllocationFlags.Hole | NbdAllocationFlags.Zero);

    [Fact]
    public void A_new_backend_is_one_hole_that_reads_as_zeroes()
    {
        var backend = new NbdMemoryBackend(1 << 20);
        var buffer = new byte[4096];
        Array.Fill(buffer, (byte)0xAA);

        Completed(backend.ReadAsync(12345, buffer, cancellationToken: Ct));

        Assert.All(buffer, b => Assert.Equal(0, b));
        Assert.Equal([new NbdExtent(0, 1 << 20, HoleFlags)], Completed(backend.GetAllocationAsync(0, 1 << 20, 100, cancellationToken: Ct)));
        Assert.Equal(0, backend.AllocatedBytes);
    }

    [Fact]
    public void Allocation_stops_at_the_extent_limit_and_covers_a_prefix()
    {
        var backend = new NbdMemoryBackend(Size, Page);
        Completed(backend.WriteAsync(Page, new byte[Page], fua: false, cancellationToken: Ct));
        Completed(backend.WriteAsync(3 * Page, new byte[Page], fua: false, cancellationToken: Ct));

        var extents = Completed(backend.GetAllocationAsync(0, Size, maxExtents: 2, cancellationToken: Ct));

        Assert.Equal([new NbdExtent(0, Page, HoleFlags), new NbdExtent(Page, Page, 0)], extents);
    }

    [Fact]
    public void Ranges_past_the_end_are_refused()
    {
        var backend = new NbdMemoryBackend(Size, Page);

        Assert.Throws<ArgumentOutOfRangeException>(() => Completed(backend.WriteAsync(Size - 1, new byte[2], fua: false, cancellationToken: Ct)));
        Assert.Throws<ArgumentOutOfRangeException>(() => Completed(backend.TrimAsync(ulong.MaxValue, 2, fua: false, cancellationToken: Ct)));
        Assert.Throws<ArgumentOutOfRangeException>(() => new NbdMemoryBackend(Size, pageSize: 3000));
    }

    // A model: the bytes, and which pages are allocated. TRIM and WRITE_ZEROES drop whole pages only.
    [Fact]
    public void Random_operations_match_a_byte_and_page_model()
    {
        var property = Prop.ForAll(Arb.From(Gen.ListOf(Operation())), operations =>
        {
            var backend = new NbdMemoryBackend(Size, Page);
            var bytes = new byte[Size];
            var allocated = new bool[Size / Page];
            foreach (var (kind, offset, length, value) in operations)
            {
                Apply(backend, bytes, allocated, kind, offset, length, value);
            }

            var read = new byte[Size];
            Completed(backend.ReadAsync(0, read));
            var extents = Completed(backend.GetAllocationAsync(0, Size, int.MaxValue));
            return read.AsSpan().SequenceEqual(bytes) && extents.SequenceEqual(ModelExtents(allocated)) && backend.AllocatedBytes == allocated.Count(a => a) * Page;
        });

        Check.One(Config.QuickThrowOnFailure.WithMaxTest(300), property);
    }

    [Fact]
    public void Allocation_of_any_sub_range_is_consecutive_and_exact()
    {
        var backend = new NbdMemoryBackend(Size, Page);
        foreach (var page in new[] { 1, 2, 5, 9, 10, 11, 100, 127 })
        {
            Completed(backend.WriteAsync((ulong)(page * Page), new byte[Page], fua: false, cancellationToken: Ct));
        }

        var property = Prop.ForAll(Arb.From(Gen.Choose(0, Size - 1).SelectMany(start => Gen.Choose(1, Size - start).Select(length => (start, length)))), range =>
        {
            var extents = Completed(backend.GetAllocationAsync((ulong)range.start, (ulong)range.length, int.MaxValue));
            var at = (ulong)range.start;
            foreach (var extent in extents)
            {
                if (extent.Offset != at || extent.Length == 0 || extent.IsHole != (extent.Flags == HoleFlags))
                {
                    return false;
                }

                at = extent.End;
            }

            return at == (ulong)(range.start + range.length) && extents.Zip(extents.Skip(1)).All(pair => pair.First.Flags != pair.Second.Flags);
        });

        Check.One(Config.QuickThrowOnFailure.WithMaxTest(300), property);
    }

    internal static T Completed<T>(ValueTask<T> task)
    {
        // The memory backend completes synchronously; anything else is a bug here, not something to wait for.
        Assert.True(task.IsCompletedSuccessfully);
        return task.Result;
    }

    internal static void Completed(ValueTask task)
    {
        Assert.True(task.IsCompletedSuccessfully);
    }

    private static void Apply(NbdMemoryBackend backend, byte[] bytes, bool[] allocated, int kind, int offset, int length, byte value)
    {
        var firstWhole = (offset + Page - 1) / Page;
        var endWhole = (offset + length) / Page;
        switch (kind)
        {
            case 0:
                var data = new byte[length];
                Array.Fill(data, value);
                Completed(backend.WriteAsync((ulong)offset, data, fua: false));
                data.CopyTo(bytes, offset);
                for (var page = offset / Page; page * Page < offset + length; page++)
                {
                    allocated[page] = true;
                }

                break;
            case 1:
            case 2:
                var noHole = kind == 2;
                Completed(backend.WriteZeroesAsync((ulong)offset, (ulong)length, noHole, fua: false));
                Array.Clear(bytes, offset, length);
                for (var page = offset / Page; page * Page < offset + length; page++)
                {
                    allocated[page] = noHole ? true : (page >= firstWhole && page < endWhole ? false : allocated[page]);
                }

                break;
            default:
                Completed(backend.TrimAsync((ulong)offset, (ulong)length, fua: false));
                for (var page = firstWhole; page < endWhole; page++)
                {
                    allocated[page] = false;
                    Array.Clear(bytes, page * Page, Page);
                }

                break;
        }
    }

    private static List<NbdExtent> ModelExtents(bool[] allocated)
    {
        var extents = new List<NbdExtent>();
        for (var page = 0; page < allocated.Length; page++)
        {
            var flags = allocated[page] ? 0u : HoleFlags;
            if (extents.Count > 0 && extents[^1].Flags == flags)
            {
                extents[^1] = extents[^1] with { Length = extents[^1].Length + Page };
            }
            else
            {
                extents.Add(new NbdExtent((ulong)(page * Page), Page, flags));
            }
        }

        return extents;
    }

    private static Gen<(int Kind, int Offset, int Length, byte Value)> Operation() =>
        from kind in Gen.Choose(0, 3)
        from offset in Gen.Choose(0, Size - 1)
        from length in Gen.Choose(1, Math.Min(Size - offset, 4 * Page))
        from value in Gen.Choose(1, 255)
        select (kind, offset, length, (byte)value);
}
