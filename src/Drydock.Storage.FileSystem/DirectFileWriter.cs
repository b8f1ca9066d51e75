using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using Drydock.Storage.FileSystem.Interop;

namespace Drydock.Storage.FileSystem;

/// <summary>
/// Writes a new file with <c>O_DIRECT</c>: the bytes go from an aligned bounce buffer to the device without passing
/// through the page cache. For large write-once objects this is much cheaper in CPU than a buffered write followed by
/// fsync (the kernel's copy into the page cache and its writeback of it, measured at several CPU-seconds per GiB on a
/// virtio disk), and it does not evict the hypervisor's cache with backup data nobody reads soon. The length is padded
/// to the alignment for the write and cut back with <c>ftruncate</c>; fsync still follows, for the device cache and the
/// metadata. A filesystem that refuses <c>O_DIRECT</c> (EINVAL) turns it off for the store: buffered writes from then on.
/// </summary>
internal sealed class DirectFileWriter
{
    private const int Alignment = DirectIo.Alignment;
    private const int BufferGranularity = 64 * 1024;
    private const int MaxPooledBuffers = 8; // the repository's default requests in flight: ~17 MiB kept for 2 MiB chunks

    private readonly ConcurrentBag<byte[]> _buffers = [];
    private volatile bool _unsupported = DirectIo.OpenFlag == 0;

    /// <summary>Whether direct writes are still being tried (false once the filesystem refused them).</summary>
    public bool Enabled => !_unsupported;

    /// <summary>Creates <paramref name="path"/> (it must not exist) holding exactly <paramref name="content"/>.</summary>
    /// <param name="path">The new file.</param>
    /// <param name="content">The bytes (at least one).</param>
    /// <param name="durable">Whether to fsync before returning.</param>
    /// <returns>0 when written; -1 when direct IO is unavailable here (nothing was left behind: write it buffered);
    /// else the errno of the failure (the file may exist: the caller removes it).</returns>
    public int Write(string path, ReadOnlySpan<byte> content, bool durable)
    {
        if (_unsupported)
        {
            return -1;
        }

        var fd = NativeMethods.Open(path, NativeMethods.OWrOnly | NativeMethods.OCreat | NativeMethods.OExcl | NativeMethods.OCloExec | DirectIo.OpenFlag, 0x1B6 /* 0666, less umask */);
        if (fd < 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            return errno == NativeMethods.EInval ? Unsupported(path, created: false) : errno;
        }

        var buffer = Rent(content.Length, out var start);
        try
        {
            var padded = (content.Length + Alignment - 1) & ~(Alignment - 1);
            var aligned = buffer.AsSpan(start, padded);
            content.CopyTo(aligned);
            aligned[content.Length..].Clear();
            var errno = WriteAll(fd, aligned);
            if (errno == NativeMethods.EInval)
            {
                // Accepted at open, refused at write (e.g. a larger logical block size): not for this filesystem.
                _ = NativeMethods.Close(fd);
                fd = -1;
                return Unsupported(path, created: true);
            }

            if (errno != 0)
            {
                return errno;
            }

            if (padded != content.Length && NativeMethods.FTruncate(fd, content.Length) != 0)
            {
                return Marshal.GetLastPInvokeError();
            }

            return durable ? NativeMethods.FSyncRetrying(fd) : 0;
        }
        finally
        {
            if (fd >= 0)
            {
                _ = NativeMethods.Close(fd);
            }

            Return(buffer);
        }
    }

    private static unsafe int WriteAll(int fd, Span<byte> aligned)
    {
        long done = 0;
        fixed (byte* start = aligned)
        {
            while (done < aligned.Length)
            {
                var n = NativeMethods.PWrite(fd, start + done, (nint)(aligned.Length - done), done);
                if (n < 0)
                {
                    var errno = Marshal.GetLastPInvokeError();
                    if (errno == NativeMethods.EIntr)
                    {
                        continue;
                    }

                    return errno;
                }

                if (n == 0)
                {
                    return NativeMethods.ENoSpc;
                }

                done += n;
            }
        }

        return 0;
    }

    private int Unsupported(string path, bool created)
    {
        _unsupported = true;
        if (created)
        {
            File.Delete(path);
        }

        return -1;
    }

    // Pinned (never moves), so an aligned window computed once stays aligned.
    private byte[] Rent(int length, out int start)
    {
        var needed = length + (2 * Alignment);
        if (!_buffers.TryTake(out var buffer) || buffer.Length < needed)
        {
            var capacity = (needed + BufferGranularity - 1) / BufferGranularity * BufferGranularity;
            buffer = GC.AllocateUninitializedArray<byte>(capacity, pinned: true);
        }

        start = DirectIo.AlignedOffset(buffer);
        return buffer;
    }

    private void Return(byte[] buffer)
    {
        if (_buffers.Count < MaxPooledBuffers)
        {
            _buffers.Add(buffer);
        }
    }
}
