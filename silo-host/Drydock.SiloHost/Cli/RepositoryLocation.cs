using Drydock.Storage;
using Drydock.Storage.Azure;
using Drydock.Storage.FileSystem;

namespace Drydock.SiloHost.Cli;

/// <summary>
/// Turns a REPO argument into a blob store: <c>file:///path</c>; <c>azure://CONTAINER[/PREFIX]</c> with the
/// connection string in <c>$DRYDOCK_AZURE_CONNECTION_STRING</c> (or <c>$AZURE_STORAGE_CONNECTION_STRING</c>);
/// or a container SAS URL <c>https://ACCOUNT.blob.core.windows.net/CONTAINER[/PREFIX]?sv=..&amp;sig=..</c>
/// (also <c>azure+https://</c> / <c>azure+http://</c> for emulators).
/// </summary>
internal static class RepositoryLocation
{
    public const string ConnectionStringVariable = "DRYDOCK_AZURE_CONNECTION_STRING";
    public const string AzureConnectionStringVariable = "AZURE_STORAGE_CONNECTION_STRING";

    public static async Task<IBlobStore> OpenAsync(string repo, bool create, CancellationToken cancellationToken)
    {
        if (!Uri.TryCreate(repo, UriKind.Absolute, out var uri))
        {
            throw new ArgumentException($"REPO '{repo}' is not a URL: use file:///path, azure://container/prefix or a container SAS URL");
        }

        switch (uri.Scheme)
        {
            case "file":
                return new FileSystemBlobStore(new FileSystemBlobStoreOptions { Root = FileRoot(repo, uri, create) });
            case "azure":
            {
                var connection = Environment.GetEnvironmentVariable(ConnectionStringVariable);
                if (string.IsNullOrEmpty(connection))
                {
                    connection = Environment.GetEnvironmentVariable(AzureConnectionStringVariable);
                }

                if (string.IsNullOrEmpty(connection))
                {
                    throw new ArgumentException($"azure:// needs a connection string in ${ConnectionStringVariable} or ${AzureConnectionStringVariable}");
                }

                var prefix = uri.AbsolutePath.Trim('/');
                var store = new AzureBlobStore(AzureStorageAccount.Parse(connection), new AzureBlobStoreOptions { Container = uri.Host, Prefix = prefix });
                if (create)
                {
                    await store.CreateContainerIfNotExistsAsync(cancellationToken);
                }

                return store;
            }

            case "https" or "http" or "azure+https" or "azure+http":
            {
                var plain = uri.Scheme.StartsWith("azure+", StringComparison.Ordinal) ? new Uri(repo["azure+".Length..]) : uri;
                var (account, container, prefix) = AzureStorageAccount.ParseSasUrl(plain);
                return new AzureBlobStore(account, new AzureBlobStoreOptions { Container = container, Prefix = prefix });
            }

            default:
                throw new ArgumentException($"REPO scheme '{uri.Scheme}' is not supported: use file://, azure:// or a SAS URL");
        }
    }

    /// <summary>
    /// The directory a <c>file:</c> REPO names: <c>file:///abs/path</c>, <c>file://localhost/abs/path</c> or a plain
    /// absolute path. Any other host is refused (<c>file://relative/path</c> would otherwise be read as the network share
    /// <c>\\relative\path</c>), and so is a regular file where the directory (or one of its parents) should be.
    /// </summary>
    private static string FileRoot(string repo, Uri uri, bool create)
    {
        string path;
        if (uri.Host.Length == 0)
        {
            path = uri.LocalPath;
        }
        else if (string.Equals(uri.Host, "localhost", StringComparison.OrdinalIgnoreCase))
        {
            path = Uri.UnescapeDataString(uri.AbsolutePath);
        }
        else
        {
            throw new ArgumentException($"REPO '{repo}' names the host '{uri.Host}': a file URL takes an absolute local path, file:///absolute/path (three slashes)");
        }

        if (File.Exists(path))
        {
            throw new ArgumentException(create
                ? $"REPO {path} is a file, not a directory: repo init needs a new or empty directory"
                : $"REPO {path} is a file, not a repository directory");
        }

        if (Directory.Exists(path))
        {
            return path;
        }

        if (!create)
        {
            throw new ArgumentException($"REPO {path} does not exist (create a repository with 'drydock repo init')");
        }

        for (var parent = Path.GetDirectoryName(path); !string.IsNullOrEmpty(parent); parent = Path.GetDirectoryName(parent))
        {
            if (File.Exists(parent))
            {
                throw new ArgumentException($"REPO {path} cannot be created: {parent} is a file, not a directory");
            }
        }

        return path;
    }
}
