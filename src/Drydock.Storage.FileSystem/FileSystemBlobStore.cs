using System.Buffers;
using System.Collections.Concurrent;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using Drydock.Storage.FileSystem.Interop;

namespace Drydock.Storage.FileSystem;

/// <summary>
/// A blob store in a local directory. A put writes a temp file under <c>.tmp/</c>, fsyncs it, and then publishes it
/// with <c>link(2)</c> (create-only: fails atomically with EEXIST) or <c>rename(2)</c> (overwrite), then fsyncs the
/// directory. A process killed at any point leaves either no object or the whole object; stale temp files are
/// removed by <see cref="CleanTempFilesAsync"/>.
/// </summary>
public sealed class FileSystemBlobStore : IBlobStore
{
    private const string TempDirectory = ".tmp";
    private const string LockDirectory = ".locks";

    private readonly string _root;
    private readonly FileSystemBlobStoreOptions _options;
    private readonly ConcurrentDictionary<string, byte> _dirtyDirectories = new(StringComparer.Ordinal);
    private readonly DirectFileWriter _direct = new();

    /// <summary>Opens (and creates if needed) a store at <see cref="FileSystemBlobStoreOptions.Root"/>.</summary>
    /// <param name="options">The options.</param>
    public FileSystemBlobStore(FileSystemBlobStoreOptions options)
    {
        ArgumentException.ThrowIfNullOrEmpty(options.Root);
        _options = options;
        _root = Path.GetFullPath(options.Root);
        Location = new Uri(_root.EndsWith('/') ? _root : _root + "/").AbsoluteUri;
        Directory.CreateDirectory(Path.Combine(_root, TempDirectory));
        Directory.CreateDirectory(Path.Combine(_root, LockDirectory));
    }

    /// <inheritdoc />
    public string Location { get; }

    /// <inheritdoc />
    public async Task<BlobProperties> PutAsync(string name, ReadOnlyMemory<byte> content, BlobCondition condition, CancellationToken cancellationToken = default)
    {
        BlobName.Validate(name);
        var path = PathOf(name);
        var directory = Path.GetDirectoryName(path)!;
        var temp = Path.Combine(_root, TempDirectory, Guid.NewGuid().ToString("N") + ".part");
        try
        {
            await WriteTempAsync(temp, name, content, cancellationToken);
            var created = EnsureDirectory(directory);
            switch (condition.Kind)
            {
                case BlobConditionKind.CreateOnly:
                    if (NativeMethods.Link(temp, path) != 0)
                    {
                        var errno = Marshal.GetLastPInvokeError();
                        if (errno == NativeMethods.EExist)
                        {
                            throw new BlobAlreadyExistsException(Location, name);
                        }

                        throw ErrnoException(errno, "link", name);
                    }

                    break;
                case BlobConditionKind.Overwrite:
                    using (await LockAsync(name, cancellationToken))
                    {
                        File.Move(temp, path, overwrite: true);
                    }

                    break;
                case BlobConditionKind.IfMatch:
                    using (await LockAsync(name, cancellationToken))
                    {
                        var current = await PropertiesOfAsync(name, path, cancellationToken);
                        if (current is null || current.ETag != condition.ETag)
                        {
                            throw new BlobConditionFailedException(Location, name);
                        }

                        File.Move(temp, path, overwrite: true);
                    }

                    break;
                default:
                    throw new ArgumentOutOfRangeException(nameof(condition));
            }

            if (_options.Durable)
            {
                var directories = created.Select(c => Path.GetDirectoryName(c)!).Prepend(directory);
                if (_options.DeferDirectorySync)
                {
                    foreach (var d in directories)
                    {
                        _dirtyDirectories.TryAdd(d, 0);
                    }
                }
                else
                {
                    foreach (var d in directories)
                    {
                        FsyncDirectory(d, name);
                    }
                }
            }

            return await PropertiesOfAsync(name, path, cancellationToken)
                ?? throw new BlobStoreUnavailableException("Object vanished right after it was written", Location, name);
        }
        catch (IOException e) when (IsDiskFull(e))
        {
            throw new BlobStoreFullException(Location, name, e);
        }
        catch (UnauthorizedAccessException e)
        {
            throw new BlobAccessDeniedException("Permission denied", Location, name, null, e);
        }
        finally
        {
            // After link() the temp name is a second link to the object; after rename() it is gone.
            TryDelete(temp);
        }
    }

    /// <inheritdoc />
    public async Task<BlobContent> GetAsync(string name, BlobRange range, long maxLength, CancellationToken cancellationToken = default)
    {
        BlobName.Validate(name);
        var path = PathOf(name);
        FileStream stream;
        try
        {
            stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete, 1, FileOptions.Asynchronous);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new BlobNotFoundException(Location, name, null, e);
        }
        catch (UnauthorizedAccessException e)
        {
            throw new BlobAccessDeniedException("Permission denied", Location, name, null, e);
        }

        await using (stream)
        {
            var objectLength = stream.Length;
            var (offset, length) = RangeMath.Resolve(Location, name, range, objectLength);
            if (length > maxLength || length > Array.MaxLength)
            {
                throw new BlobTooLargeException(Location, name, length, maxLength);
            }

            var buffer = ArrayPool<byte>.Shared.Rent((int)Math.Max(1, length));
            try
            {
                var read = 0;
                while (read < length)
                {
                    var n = await RandomAccess.ReadAsync(stream.SafeFileHandle, buffer.AsMemory(read, (int)length - read), offset + read, cancellationToken);
                    if (n == 0)
                    {
                        break;
                    }

                    read += n;
                }

                var properties = await PropertiesOfAsync(name, path, cancellationToken) ?? throw new BlobNotFoundException(Location, name);
                return new BlobContent(buffer, read, properties);
            }
            catch
            {
                ArrayPool<byte>.Shared.Return(buffer);
                throw;
            }
        }
    }

    /// <inheritdoc />
    public Task<BlobProperties?> GetPropertiesAsync(string name, CancellationToken cancellationToken = default)
    {
        BlobName.Validate(name);
        return PropertiesOfAsync(name, PathOf(name), cancellationToken);
    }

    /// <inheritdoc />
    public async Task<bool> DeleteAsync(string name, string? ifMatch = null, CancellationToken cancellationToken = default)
    {
        BlobName.Validate(name);
        var path = PathOf(name);
        try
        {
            if (ifMatch is null)
            {
                return DeleteFile(path);
            }

            using (await LockAsync(name, cancellationToken))
            {
                var current = await PropertiesOfAsync(name, path, cancellationToken);
                if (current is null || current.ETag != ifMatch)
                {
                    throw new BlobConditionFailedException(Location, name);
                }

                return DeleteFile(path);
            }
        }
        catch (UnauthorizedAccessException e)
        {
            throw new BlobAccessDeniedException("Permission denied", Location, name, null, e);
        }
    }

    /// <inheritdoc />
    public async Task<BlobListPage> ListPageAsync(string prefix, string? continuation, int maxResults, CancellationToken cancellationToken = default)
    {
        BlobName.ValidatePrefix(prefix);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxResults, 1);
        var names = new List<string>();
        var more = false;

        // Walk from the deepest directory the prefix names, in ordinal order of full names, skipping whole
        // subtrees that sort before the continuation token: a page costs what it returns, not the whole store.
        var slash = prefix.LastIndexOf('/');
        var startName = slash < 0 ? "" : prefix[..(slash + 1)];
        var startDirectory = slash < 0 ? _root : Path.Combine(_root, prefix[..slash]);
        if (Directory.Exists(startDirectory))
        {
            more = Walk(startDirectory, startName, prefix, continuation, maxResults, names, cancellationToken);
        }

        var items = new List<BlobProperties>(names.Count);
        foreach (var name in names)
        {
            var properties = await PropertiesOfAsync(name, PathOf(name), cancellationToken);
            if (properties is not null)
            {
                items.Add(properties);
            }
        }

        return new BlobListPage(items, more && names.Count > 0 ? names[^1] : null);
    }

    /// <inheritdoc />
    public Task FlushAsync(CancellationToken cancellationToken = default)
    {
        foreach (var directory in _dirtyDirectories.Keys)
        {
            cancellationToken.ThrowIfCancellationRequested();
            if (_dirtyDirectories.TryRemove(directory, out _))
            {
                try
                {
                    FsyncDirectory(directory, Path.GetRelativePath(_root, directory));
                }
                catch
                {
                    _dirtyDirectories.TryAdd(directory, 0);
                    throw;
                }
            }
        }

        return Task.CompletedTask;
    }

    /// <summary>Removes temp files left by writers that died (older than <paramref name="olderThan"/>).</summary>
    /// <param name="olderThan">How old a temp file must be before it counts as abandoned.</param>
    /// <param name="now">The current time.</param>
    /// <param name="cancellationToken">Cancels the sweep.</param>
    /// <returns>The number of files removed.</returns>
    public Task<int> CleanTempFilesAsync(TimeSpan olderThan, DateTimeOffset now, CancellationToken cancellationToken = default)
    {
        var removed = 0;
        foreach (var file in Directory.EnumerateFiles(Path.Combine(_root, TempDirectory)))
        {
            cancellationToken.ThrowIfCancellationRequested();
            if (now - File.GetLastWriteTimeUtc(file) > olderThan && DeleteFile(file))
            {
                removed++;
            }
        }

        return Task.FromResult(removed);
    }

    private bool Walk(string directory, string directoryName, string prefix, string? continuation, int maxResults, List<string> names, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        var entries = new List<(string SortKey, string Name, bool IsDirectory)>();
        foreach (var entry in new DirectoryInfo(directory).EnumerateFileSystemInfos())
        {
            if (entry.Name.StartsWith('.'))
            {
                continue;
            }

            var isDirectory = (entry.Attributes & FileAttributes.Directory) != 0;
            var full = directoryName + entry.Name;
            entries.Add((isDirectory ? full + "/" : full, full, isDirectory));
        }

        entries.Sort((a, b) => string.CompareOrdinal(a.SortKey, b.SortKey));
        foreach (var (sortKey, full, isDirectory) in entries)
        {
            if (isDirectory)
            {
                // The subtree holds names starting with sortKey: skip it unless it can match the prefix and can
                // hold names after the continuation.
                var canMatch = sortKey.StartsWith(prefix, StringComparison.Ordinal) || prefix.StartsWith(sortKey, StringComparison.Ordinal);
                var afterContinuation = continuation is null
                    || string.CompareOrdinal(sortKey, continuation) > 0
                    || continuation.StartsWith(sortKey, StringComparison.Ordinal);
                if (canMatch && afterContinuation
                    && Walk(Path.Combine(directory, Path.GetFileName(full)), sortKey, prefix, continuation, maxResults, names, cancellationToken))
                {
                    return true;
                }

                continue;
            }

            if (!full.StartsWith(prefix, StringComparison.Ordinal)
                || (continuation is not null && string.CompareOrdinal(full, continuation) <= 0)
                || !BlobName.IsValid(full))
            {
                continue;
            }

            if (names.Count == maxResults)
            {
                return true;
            }

            names.Add(full);
        }

        return false;
    }

    private async Task WriteTempAsync(string temp, string name, ReadOnlyMemory<byte> content, CancellationToken cancellationToken)
    {
        if (_options.DirectWriteThreshold > 0 && content.Length >= _options.DirectWriteThreshold && _direct.Enabled)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var errno = _direct.Write(temp, content.Span, _options.Durable);
            if (errno == 0)
            {
                return;
            }

            if (errno > 0)
            {
                throw ErrnoException(errno, "write", name);
            }
        }

        var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1, FileOptions.Asynchronous);
        await using (stream)
        {
            if (content.Length > 0)
            {
                await RandomAccess.WriteAsync(stream.SafeFileHandle, content, 0, cancellationToken);
            }

            if (_options.Durable && NativeMethods.FSync(stream.SafeFileHandle) is var errno and not 0)
            {
                throw ErrnoException(errno, "fsync", Path.GetFileName(temp));
            }
        }
    }

    private async Task<BlobProperties?> PropertiesOfAsync(string name, string path, CancellationToken cancellationToken)
    {
        var info = new FileInfo(path);
        if (!info.Exists)
        {
            return null;
        }

        long length;
        DateTime modified;
        try
        {
            length = info.Length;
            modified = info.LastWriteTimeUtc;
        }
        catch (FileNotFoundException)
        {
            return null;
        }

        string etag;
        if (length <= _options.ContentETagLimit)
        {
            byte[] bytes;
            try
            {
                bytes = await File.ReadAllBytesAsync(path, cancellationToken);
            }
            catch (FileNotFoundException)
            {
                return null;
            }

            etag = "\"" + Convert.ToHexStringLower(SHA256.HashData(bytes).AsSpan(0, 16)) + "\"";
            length = bytes.Length;
        }
        else
        {
            etag = string.Create(CultureInfo.InvariantCulture, $"\"t{modified.Ticks:x}-{length:x}\"");
        }

        return new BlobProperties(name, length, etag, new DateTimeOffset(modified, TimeSpan.Zero));
    }

    private async Task<IDisposable> LockAsync(string name, CancellationToken cancellationToken)
    {
        // An advisory lock (flock, via FileShare.None) per object name serialises compare-and-swap among
        // processes on this host; create-only puts do not need it (link is atomic).
        var lockName = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(name)).AsSpan(0, 16));
        var lockPath = Path.Combine(_root, LockDirectory, lockName);
        var delay = 1;
        while (true)
        {
            try
            {
                return new FileStream(lockPath, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None, 1, FileOptions.None);
            }
            catch (IOException) when (!cancellationToken.IsCancellationRequested)
            {
                await Task.Delay(delay, cancellationToken);
                delay = Math.Min(delay * 2, 50);
            }
        }
    }

    private string PathOf(string name) => Path.Combine(_root, name);

    private List<string> EnsureDirectory(string directory)
    {
        var created = new List<string>();
        var current = directory;
        while (!Directory.Exists(current))
        {
            created.Add(current);
            current = Path.GetDirectoryName(current)!;
        }

        if (created.Count > 0)
        {
            Directory.CreateDirectory(directory);
        }

        return created;
    }

    private void FsyncDirectory(string directory, string name)
    {
        var fd = NativeMethods.Open(directory, NativeMethods.ORdOnly | NativeMethods.ODirectory | NativeMethods.OCloExec);
        if (fd < 0)
        {
            throw ErrnoException(Marshal.GetLastPInvokeError(), "open directory", name);
        }

        try
        {
            int rc;
            do
            {
                rc = NativeMethods.FSync(fd);
            }
            while (rc != 0 && Marshal.GetLastPInvokeError() == NativeMethods.EIntr);

            if (rc != 0)
            {
                throw ErrnoException(Marshal.GetLastPInvokeError(), "fsync directory", name);
            }
        }
        finally
        {
            _ = NativeMethods.Close(fd);
        }
    }

    private BlobStoreException ErrnoException(int errno, string operation, string name) => errno switch
    {
        NativeMethods.ENoSpc or NativeMethods.EDQuot => new BlobStoreFullException(Location, name),
        NativeMethods.EAcces or NativeMethods.EPerm => new BlobAccessDeniedException($"{operation}: permission denied", Location, name),
        _ => new BlobStoreUnavailableException($"{operation} failed: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})", Location, name),
    };

    private static bool IsDiskFull(IOException e)
        => e.HResult is NativeMethods.ENoSpc or NativeMethods.EDQuot or unchecked((int)0x80070070)
           || e.Message.Contains("No space left", StringComparison.OrdinalIgnoreCase)
           || e.Message.Contains("quota", StringComparison.OrdinalIgnoreCase);

    private static bool DeleteFile(string path)
    {
        try
        {
            if (!File.Exists(path))
            {
                return false;
            }

            File.Delete(path);
            return true;
        }
        catch (DirectoryNotFoundException)
        {
            return false;
        }
    }

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (IOException)
        {
            // Best effort: CleanTempFilesAsync removes leftovers.
        }
    }
}
