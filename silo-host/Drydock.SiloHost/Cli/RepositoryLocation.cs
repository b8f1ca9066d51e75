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
                if (!create && !Directory.Exists(uri.LocalPath))
                {
                    throw new ArgumentException($"{uri.LocalPath} does not exist");
                }

                return new FileSystemBlobStore(new FileSystemBlobStoreOptions { Root = uri.LocalPath });
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
}
